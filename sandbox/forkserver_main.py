"""Process entry of the fork server: ``python -m sandbox.forkserver_main CONN_FD``.

Contract: started only by ``ForkServerClient`` with CONN_FD, its end of the socketpair, as the
only argument (like CPython's multiprocessing forkserver, the descriptor number is the one thing
passed on the command line; everything else arrives in the ``Init`` frame).
"""

from __future__ import annotations

import sys


def main() -> int:
    from sandbox.forkserver_startup import serve

    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m sandbox.forkserver_main CONN_FD (started by the knowledge-mcp server)", file=sys.stderr)
        return 2
    return serve(int(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
