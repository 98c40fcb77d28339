"""A workload for the SPIRE-mode interop check: fetch an X.509-SVID from tessera's socket with
py-spiffe and print its SPIFFE ID, or NOIDENTITY (exit 2) when none is given."""
import sys

from spiffe import WorkloadApiClient

try:
    client = WorkloadApiClient(socket_path=f"unix:{sys.argv[1]}", default_timeout=10)
    svid = client.fetch_x509_svid()
    print(svid.spiffe_id)
except Exception as e:  # noqa: BLE001
    print(f"NOIDENTITY {type(e).__name__}: {e}")
    sys.exit(2)
