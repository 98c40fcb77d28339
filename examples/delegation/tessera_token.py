"""RFC 8693 token exchange against tessera's token socket, with httpx over a Unix transport.

The agent sends no secret: tessera attests the calling process by its peer credentials.
"""
import time

import httpx

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT = "urn:ietf:params:oauth:token-type:jwt"


class ExchangeError(Exception):
    def __init__(self, answer):
        super().__init__(f"{answer.get('error')}: {answer.get('error_description')}")
        self.answer = answer


def client(token_socket):
    return httpx.Client(transport=httpx.HTTPTransport(uds=token_socket), base_url="http://tessera")


def exchange(token_socket, subject_token, audience, scope, on_pending=None, approval_id=None):
    """Exchange `subject_token` for a token for `audience` with exactly `scope`. If a human must
    approve, call on_pending(approval_id) once and poll at the interval tessera asks for."""
    with client(token_socket) as c:
        while True:
            form = {
                "grant_type": GRANT,
                "subject_token": subject_token,
                "subject_token_type": JWT,
                "audience": audience,
                "scope": scope,
            }
            if approval_id:
                form["approval_id"] = approval_id
            r = c.post("/token", data=form)
            answer = r.json()
            if r.status_code == 200:
                return answer
            if answer.get("error") == "authorization_pending":
                if approval_id is None and on_pending:
                    on_pending(answer["approval_id"])
                approval_id = answer["approval_id"]
                time.sleep(answer.get("interval", 2))
                continue
            raise ExchangeError(answer)


def jwks(token_socket):
    with client(token_socket) as c:
        return c.get("/jwks").json()
