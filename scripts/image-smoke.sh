#!/usr/bin/env bash
# Build the Docker image for real and drive one MCP session in it with no network.
#
#   scripts/image-smoke.sh                 # build, measure, run the session; last line: one JSON summary
#   KEEP=1 scripts/image-smoke.sh          # keep the exported root filesystem (printed) for a look
#
# Engine: a working Docker engine (`docker info`) builds from python:3.11-slim-bookworm and runs the
# session with `docker run --network=none --read-only`. Without one, podman builds it (as root:
# `apt-get install -y podman debootstrap`): Docker Hub may be out of reach, so the base is a Debian
# bookworm made with debootstrap (python3 3.11, libseccomp2), passed as the BASE_IMAGE build arg and
# kept as localhost/knowledge-mcp-base:bookworm for the next run. Where containers cannot start (crun
# cannot set rlimits in some VMs), the image's exported root filesystem runs under `unshare --net
# --mount` + `chroot`, read-only with a tmpfs /tmp, as the image's user, with the image's environment.
#
# The session (the host's mcp client, PYTHON below): `serve --root` on a copy of sandbox/ (so the
# index is built inside the image by the baked ONNX encoder, no torch), then tools/list, search_code,
# execute_code (search + read + state), save_skill and a call to it, and a program that tries the
# network. The build needs the package registry; pip settings of this host (CA bundle, find-links) are
# passed to the build as a mounted pip.conf, never baked into the image.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/knowledge-mcp:smoke}"
BASE_IMAGE="${BASE_IMAGE:-}"
LOCAL_BASE="localhost/knowledge-mcp-base:bookworm"
PYTHON="${PYTHON:-.venv/bin/python}"
MAX_IMAGE_MB="${MAX_IMAGE_MB:-800}"
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/knowledge-mcp-image.XXXXXX")"

log() { printf '[image-smoke] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
cleanup() {
    if [ "${KEEP:-0}" = "1" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

[ -x "$PYTHON" ] || die "no Python with the mcp client at $PYTHON (run scripts/install.sh, or set PYTHON)"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
    [ "$(id -u)" = "0" ] || die "the podman path needs root (debootstrap, unshare, chroot)"
else
    die "neither a Docker engine nor podman: apt-get install -y podman debootstrap"
fi
log "engine: $ENGINE"

# ------------------------------------------------------------------ base image
if [ -z "$BASE_IMAGE" ]; then
    if [ "$ENGINE" = docker ] || podman image exists python:3.11-slim-bookworm 2>/dev/null \
        || timeout 60 podman pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
        BASE_IMAGE=python:3.11-slim-bookworm
    elif podman image exists "$LOCAL_BASE"; then
        BASE_IMAGE="$LOCAL_BASE"
    else
        command -v debootstrap >/dev/null || die "Docker Hub is out of reach and debootstrap is missing: apt-get install -y debootstrap"
        log "making $LOCAL_BASE with debootstrap (a few minutes, once)"
        debootstrap --variant=minbase --include=python3,python3-venv,libseccomp2,ca-certificates \
            bookworm "$WORK/base" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
        rm -rf "$WORK/base/var/cache/apt/archives/"*.deb "$WORK/base/var/lib/apt/lists/"* \
            "$WORK/base/usr/share/doc" "$WORK/base/usr/share/man" "$WORK/base/usr/share/locale"
        tar -C "$WORK/base" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
        rm -rf "$WORK/base"
        BASE_IMAGE="$LOCAL_BASE"
    fi
fi
log "base image: $BASE_IMAGE"

# ------------------------------------------------------------------ build
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE")
if [ "$ENGINE" = podman ]; then
    BUILD_ARGS+=(--isolation=chroot)
    # This host's pip settings, for the build only: its CA bundle (a TLS-inspecting proxy) and its
    # find-links (a local CPU torch wheel).
    {
        echo "[global]"
        if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
            echo "cert = /etc/pip-host-ca.crt"
            BUILD_ARGS+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/pip-host-ca.crt:ro)
        fi
        links="${PIP_FIND_LINKS:-$("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)}"
        if [ -n "$links" ] && [ -d "$links" ]; then
            echo "find-links = $links"
            BUILD_ARGS+=(-v "$links:$links:ro")
        fi
    } >"$WORK/pip.conf"
    BUILD_ARGS+=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
fi
log "building $IMAGE (pip needs the registry; several minutes)"
started=$(date +%s)
"$ENGINE" build "${BUILD_ARGS[@]}" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; die "the build failed"; }
build_s=$(( $(date +%s) - started ))
size_bytes=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE")
size_mb=$(( size_bytes / 1000000 ))
log "built in ${build_s}s: $IMAGE is $size_mb MB"

# ------------------------------------------------------------------ the session
mkdir -p "$WORK/src"
cp -r sandbox "$WORK/src/"
find "$WORK/src" -name '__pycache__' -prune -exec rm -rf {} +

if [ "$ENGINE" = docker ]; then
    SERVER=(docker run -i --rm --network=none --read-only --tmpfs /tmp -v "$WORK/src:/srv/src:ro" "$IMAGE"
            --root /srv/src)
else
    log "exporting the image's root filesystem"
    mkdir -p "$WORK/root"
    cid=$(podman create "$IMAGE")
    podman export "$cid" | tar -C "$WORK/root" -x
    podman rm -f "$cid" >/dev/null
    mkdir -p "$WORK/root/srv/src" "$WORK/root/proc" "$WORK/root/dev" "$WORK/root/tmp"
    user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
    workdir=$(podman image inspect --format '{{.Config.WorkingDir}}' "$IMAGE")
    mapfile -t image_env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
    entrypoint=$(podman image inspect --format '{{range .Config.Entrypoint}}{{.}} {{end}}' "$IMAGE")
    # Inside a new network namespace (loopback only, down) and mount namespace: the root read-only,
    # a tmpfs /tmp, /proc and /dev; then chroot as the image's user with only the image's environment.
    inner="mount --bind '$WORK/root' '$WORK/root' && mount -o remount,bind,ro '$WORK/root' \
        && mount -t tmpfs -o mode=1777 tmpfs '$WORK/root/tmp' && mount -t proc proc '$WORK/root/proc' \
        && mount --rbind /dev '$WORK/root/dev' && mount --bind -o ro '$WORK/src' '$WORK/root/srv/src' \
        && cd / && exec chroot --userspec='$user' '$WORK/root' /usr/bin/env -i"
    for assignment in "${image_env[@]}"; do inner+=" '$assignment'"; done
    inner+=" /bin/sh -c 'cd $workdir && exec $entrypoint--root /srv/src'"
    SERVER=(unshare --net --mount --propagation private --fork /bin/sh -c "$inner")
fi

log "driving one MCP session (the index of sandbox/ is built inside the image first)"
SUMMARY=$("$PYTHON" - "$size_mb" "$MAX_IMAGE_MB" "$build_s" "$ENGINE" "${SERVER[@]}" <<'PY'
import asyncio, json, sys, time

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

size_mb, max_mb, build_s, engine, command = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
checks: dict[str, bool] = {}


def check(name: str, passed: bool, detail: object = "") -> None:
    checks[name] = bool(passed)
    print(f"[image-smoke] {'ok  ' if passed else 'FAIL'} {name} {detail if not passed else ''}", file=sys.stderr)


async def main() -> None:
    params = StdioServerParameters(command=command[0], args=command[1:], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    started = time.monotonic()
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=900) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            check("tools listed", {"execute_code", "search_code", "save_skill", "delete_skill"} <= tools, tools)
            found = await session.call_tool("search_code", {"query": "seccomp filter of system calls", "k": 3})
            paths = [hit["path"] for hit in (found.structured_content or {}).get("hits", [])]
            check("search_code finds the seccomp module", any("seccomp" in path for path in paths), found)
            program = ("hits = search('which system calls are blocked', k=5)\n"
                       "state['n'] = len(hits)\n"
                       "result = {'paths': [h.path for h in hits], 'line': read(hits[0].path, 1, 1)}\n")
            ran = (await session.call_tool("execute_code", {"code": program})).structured_content or {}
            check("execute_code runs search and read", ran.get("ok") and ran["result"]["paths"], ran)
            again = (await session.call_tool("execute_code", {"code": "result = state['n']"})).structured_content or {}
            check("state is kept across calls", again.get("result") == 5, again)
            saved = await session.call_tool("save_skill", {
                "name": "top_paths", "source": "def top_paths(query, k=3):\n    return [h.path for h in bm25(query, k=k)]\n",
                "description": "paths of the best BM25 hits"})
            called = (await session.call_tool("execute_code", {"code": "result = top_paths('landlock', 2)"})).structured_content or {}
            check("a saved skill is callable", not saved.is_error and called.get("ok") and len(called["result"]) == 2, called)
            refused = (await session.call_tool("execute_code", {"code": "import socket"})).structured_content or {}
            check("the network module is refused", refused.get("outcome") == "validation_error", refused)
            broken = (await session.call_tool("execute_code", {"code": "raise ValueError('boom')"})).structured_content or {}
            check("errors come back as results", broken.get("outcome") == "runtime_error", broken)
    check("image under the size target", size_mb < max_mb, f"{size_mb} MB >= {max_mb} MB")
    print(json.dumps({"engine": engine, "image_mb": size_mb, "build_s": build_s,
                      "session_s": round(time.monotonic() - started, 1), "checks_passed": sum(checks.values()),
                      "checks": len(checks), "ok": all(checks.values())}))


asyncio.run(main())
PY
)
echo "$SUMMARY"
case "$SUMMARY" in *'"ok": true'*) exit 0 ;; *) exit 1 ;; esac
