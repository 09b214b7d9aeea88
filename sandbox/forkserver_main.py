"""Process entry of the fork server: ``python -m sandbox.forkserver_main CONN_FD``.

Contract: started only by ``ForkServerClient`` with CONN_FD, its end of the socketpair, and, when
Qdrant-backed indexes are served, BROKER_FD (a SOCK_SEQPACKET socket on which it only *sends* each
call's broker socket to the server) as the only arguments (like CPython's multiprocessing forkserver, the descriptor number is the one thing
passed on the command line; everything else arrives in the ``Init`` frame).
"""

from __future__ import annotations

import sys


def main() -> int:
    from sandbox.forkserver_startup import serve

    if len(sys.argv) not in (2, 3) or not all(arg.isdigit() for arg in sys.argv[1:]):
        print("usage: python -m sandbox.forkserver_main CONN_FD [BROKER_FD] (started by the knowledge-mcp server)",
              file=sys.stderr)
        return 2
    return serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else None)


if __name__ == "__main__":
    sys.exit(main())
