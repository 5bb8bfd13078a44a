#!/usr/bin/env bash
# Smoke test of the container images: build, then in the image run `doreisa --version`,
# `doreisa validate examples/heat/contract.yaml` and the heat demo (the image's default
# command) writing into a host folder mounted at /out; pass if OUT/summary.json says
# "ok": true and OUT/results.csv has rows. See docker/README.md.
#
#   docker/smoke.sh                 docker/Dockerfile (MPICH wheel)
#   docker/smoke.sh --mpi           docker/Dockerfile.mpi (mpi4py built against Open MPI)
#   docker/smoke.sh --all           both
#   docker/smoke.sh --offline-base  no registry: a debootstrapped debian:bookworm-slim base in
#                                   a private podman store, deleted at the end (root, Debian)
set -euo pipefail

usage() {
    cat <<'EOF'
usage: docker/smoke.sh [--mpi | --all] [--offline-base] [--install-tools] [--keep] [--engine ENGINE]

  (default)        build and test docker/Dockerfile (image doreisa:latest)
  --mpi            build and test docker/Dockerfile.mpi only (image doreisa-mpi:latest)
  --all            both
  --engine ENGINE  podman or docker (also $ENGINE). Default: podman if installed, else docker
  --offline-base   no container registry (also DOREISA_OFFLINE_BASE=1): debootstrap a Debian
                   bookworm base, copy the host's CA bundle into it, import it into a private
                   podman store as docker.io/library/debian:bookworm-slim, build with
                   --pull=never, delete the store at the end. Needs root, podman, runc and
                   debootstrap; pip and apt still need the package registries.
  --install-tools  apt-get install what is missing (podman, runc, debootstrap)
  --keep           keep the demo's output folders (and print where they are)
  -h, --help       this help

Environment: ENGINE, DOREISA_OFFLINE_BASE=1, DEBIAN_MIRROR (offline base; default: the
mirror the host's apt uses), CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt),
DEMO_TIMEOUT (seconds per demo run, default 900).
EOF
}

images=(main)
offline=${DOREISA_OFFLINE_BASE:-0}
[[ $offline == 1 || $offline == true || $offline == yes ]] && offline=1 || offline=0
install_tools=0
keep=0
engine=${ENGINE:-}
while (($#)); do
    case $1 in
        --mpi) images=(mpi) ;;
        --all) images=(main mpi) ;;
        --offline-base) offline=1 ;;
        --install-tools) install_tools=1 ;;
        --keep) keep=1 ;;
        --engine) engine=${2:?--engine needs a value}; shift ;;
        --engine=*) engine=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "smoke: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
demo_timeout=${DEMO_TIMEOUT:-900}

log() { printf 'smoke: %s\n' "$*" >&2; }
fail() {
    printf 'smoke: FAIL: %s\n' "$*" >&2
    exit 1
}

# --- what is ours to clean up, whatever happens ---------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/dsmoke.XXXXXX")
outs=()
eng=()  # the engine command, with the private store in offline mode

remove_out() {  # files the container's root wrote may not be ours to remove: let it remove them
    local dir=$1 image=$2
    rm -rf "$dir" 2>/dev/null && return
    "${eng[@]}" run --rm --network=none -v "$dir:/out:Z" "$image" sh -c 'rm -rf /out/* /out/.[!.]*' \
        >/dev/null 2>&1 || true
    rm -rf "$dir" 2>/dev/null || log "could not remove $dir"
}

cleanup() {
    local rc=$? entry
    set +e
    if ((keep)); then
        for entry in ${outs[@]+"${outs[@]}"}; do log "kept ${entry%%|*}"; done
    else
        for entry in ${outs[@]+"${outs[@]}"}; do remove_out "${entry%%|*}" "${entry#*|}"; done
    fi
    if ((offline)) && ((${#eng[@]})); then
        # containers first (a killed run can leave one), then whatever podman left mounted
        "${eng[@]}" rm -af -t 0 >/dev/null 2>&1
        "${eng[@]}" rmi -af >/dev/null 2>&1
        if command -v findmnt >/dev/null; then
            findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r m; do umount -l "$m"; done
        fi
    fi
    # --one-file-system: never follow a mount left inside the store into anything else
    rm -rf --one-file-system "$work" 2>/dev/null || rm -rf "$work" 2>/dev/null \
        || log "could not remove $work"
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -----------------------------------------------------------------------------------
apt_updated=0
apt_install() {
    ((install_tools)) || fail "$1 is missing: install it, or rerun with --install-tools (Debian/Ubuntu, root)"
    command -v apt-get >/dev/null || fail "$1 is missing and there is no apt-get to install it"
    [[ $(id -u) == 0 ]] || fail "$1 is missing; --install-tools needs root (apt-get)"
    if ((!apt_updated)); then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

if ((offline)); then
    [[ -z $engine || $engine == podman ]] || fail "--offline-base needs podman (a private image store), not $engine"
    engine=podman
    [[ $(id -u) == 0 ]] || fail "--offline-base needs root (debootstrap, a private podman store)"
    missing=()
    for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
    [[ -r $ca_bundle ]] || fail "no CA bundle at $ca_bundle (set CA_BUNDLE)"
elif [[ -z $engine ]]; then
    # podman first: it needs no daemon (a `docker` command may exist without one)
    if command -v podman >/dev/null; then
        engine=podman
    elif command -v docker >/dev/null; then
        engine=docker
    elif ((install_tools)); then
        apt_install podman
        engine=podman
    else
        fail "neither podman nor docker found: install one, set ENGINE, or use --install-tools"
    fi
elif ! command -v "$engine" >/dev/null; then
    [[ $engine == podman ]] || fail "ENGINE=$engine: command not found"
    apt_install podman
fi

eng=("$engine")
build_opts=()
if ((offline)); then
    # the recipe of shared/CONTAINERS.md: runc, ulimits the sandbox accepts, a private store
    cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=8192:8192"]
[engine]
runtime = "runc"
EOF
    export CONTAINERS_CONF=$work/containers.conf
    eng=(podman --root "$work/store" --runroot "$work/run")
    build_opts=(--pull=never)
fi
"${eng[@]}" info >/dev/null 2>&1 || fail "'${eng[*]} info' fails: is the engine usable (docker: is the daemon running)?"
engine_version=$("${eng[@]}" version --format '{{.Client.Version}}' 2>/dev/null || echo '?')
log "engine: $engine $engine_version$( ((offline)) && echo ' (offline base, private store)')"

# --- offline base image ----------------------------------------------------------------------
offline_base() {
    local mirror=${DEBIAN_MIRROR:-} rootfs=$work/rootfs t0=$SECONDS
    if [[ -z $mirror && -r /etc/apt/sources.list.d/debian.sources ]]; then
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $mirror && -r /etc/apt/sources.list ]]; then
        mirror=$(awk '$1 == "deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list)
    fi
    [[ -n $mirror ]] || fail "no Debian mirror in the host's apt sources: set DEBIAN_MIRROR"
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap failed (log above)"; }
    # as the official slim image: no docs, man pages or locales from later installs, and
    # apt's sources for updates and security fixes
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    # HTTPS here may go through a proxy that re-signs certificates: pip in the build must
    # trust what the host trusts. Only the test base gets this, never the Dockerfiles.
    mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/usr/local/share/ca-certificates"
    cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    fi
    tar -C "$rootfs" -c . | "${eng[@]}" import \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["bash"]' \
        - localhost/debian-base >/dev/null
    "${eng[@]}" tag localhost/debian-base docker.io/library/debian:bookworm-slim
    rm -rf --one-file-system "$rootfs"
    log "base image docker.io/library/debian:bookworm-slim ready in $((SECONDS - t0)) s," \
        "$(($(image_size docker.io/library/debian:bookworm-slim) / 1000000)) MB"
}

# --- one image -------------------------------------------------------------------------------
results=()
image_size() {  # bytes, as the engine counts them
    "${eng[@]}" image inspect --format '{{.Size}}' "$1" 2>/dev/null || echo 0
}

check_outputs() {  # OUT: what a demo run must leave on the host
    local out=$1 rows
    [[ -s $out/summary.json ]] || { log "no $out/summary.json"; return 1; }
    if command -v python3 >/dev/null; then
        python3 - "$out/summary.json" <<'EOF' || return 1
import json, sys
summary = json.load(open(sys.argv[1]))
if summary.get("ok") is not True:
    sys.exit(f"smoke: summary.json: ok={summary.get('ok')!r}, error={summary.get('error')!r}")
EOF
    else
        grep -Eq '^  "ok": true' "$out/summary.json" || { log "summary.json does not say \"ok\": true"; return 1; }
    fi
    [[ -s $out/results.csv ]] || { log "no $out/results.csv"; return 1; }
    rows=$(($(wc -l <"$out/results.csv") - 1))
    ((rows > 0)) || { log "$out/results.csv has no rows"; return 1; }
    log "summary.json: ok; results.csv: $rows rows"
}

smoke_one() {
    local kind=$1 dockerfile image out t0 build_s run_s size_mb status=PASS why=""
    case $kind in
        main) dockerfile=docker/Dockerfile image=doreisa:latest ;;
        mpi) dockerfile=docker/Dockerfile.mpi image=doreisa-mpi:latest ;;
    esac
    log "building $image from $dockerfile"
    t0=$SECONDS
    if ! "${eng[@]}" build ${build_opts[@]+"${build_opts[@]}"} -f "$dockerfile" -t "$image" . >"$work/build-$kind.log" 2>&1; then
        tail -n 30 "$work/build-$kind.log" >&2
        results+=("FAIL $image: build failed (log above)")
        return 1
    fi
    build_s=$((SECONDS - t0))
    size_mb=$(($(image_size "$image") / 1000000))
    log "built $image in ${build_s} s, $size_mb MB"

    local run=("${eng[@]}" run --rm --network=none)
    log "$image: doreisa --version"
    "${run[@]}" "$image" doreisa --version >&2 || { results+=("FAIL $image: doreisa --version"); return 1; }
    log "$image: doreisa validate examples/heat/contract.yaml"
    "${run[@]}" "$image" doreisa validate examples/heat/contract.yaml >&2 \
        || { results+=("FAIL $image: doreisa validate examples/heat/contract.yaml"); return 1; }

    # the demo: the image's default command, which writes into /out
    out=$(mktemp -d "${TMPDIR:-/tmp}/dsmoke-out-$kind.XXXXXX")
    outs+=("$out|$image")
    chmod 777 "$out"  # whoever the container's user maps to on the host may write there
    local limit=()
    command -v timeout >/dev/null && limit=(timeout --kill-after=30 "$demo_timeout")
    log "$image: the demo (default command), output in $out"
    t0=$SECONDS
    if ! ${limit[@]+"${limit[@]}"} "${run[@]}" --shm-size=2g -v "$out:/out:Z" "$image" >"$work/demo-$kind.log" 2>&1; then
        status=FAIL why="the demo exited non-zero"
    fi
    run_s=$((SECONDS - t0))
    tail -n 25 "$work/demo-$kind.log" >&2
    if [[ $status == PASS ]] && ! check_outputs "$out"; then
        status=FAIL why="its outputs are wrong"
    fi
    results+=("$status $image ($dockerfile): build ${build_s} s, ${size_mb} MB, demo ${run_s} s${why:+: $why}")
    [[ $status == PASS ]]
}

# --- run -------------------------------------------------------------------------------------
if ((offline)); then offline_base; fi
failed=0
for kind in "${images[@]}"; do
    smoke_one "$kind" || failed=1
done
for line in ${results[@]+"${results[@]}"}; do log "$line"; done
if ((failed)); then
    echo "smoke: FAIL (${images[*]}, $engine $engine_version)"
    exit 1
fi
echo "smoke: PASS (${images[*]}, $engine $engine_version)"
