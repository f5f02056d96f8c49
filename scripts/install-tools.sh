#!/usr/bin/env bash
# Provision the deployment tools the tests in tests/deploy/ need:
#   * helm     - built from source through the Go module proxy (`go install`), pinned, cached
#                outside the repository under ${XDG_CACHE_HOME:-$HOME/.cache}/norce-order-bridge/tools/
#   * helm-docs - generates the chart's values table (helm/norce-order-bridge/README.md), built
#                the same way (`go install`), pinned, cached beside helm
#   * kube-score - the policy scanner tests/deploy/test_policy_scanners.py runs on the rendered
#                chart, built the same way, pinned, cached beside helm
#   * promtool - from Debian's `prometheus` package (/usr/bin/promtool, /usr/bin/prometheus)
#   * the official AsyncAPI parser - `@asyncapi/parser` with `@asyncapi/avro-schema-parser` (the
#                Avro payloads of asyncapi.yaml), from the npm registry with `npm ci`: every package
#                pinned with its integrity hash by scripts/asyncapi-tools/package-lock.json, cached
#                under .../tools/asyncapi/ (tests/deploy/test_asyncapi_valid.py runs it with
#                node >= 18 through tests/deploy/asyncapi_validate.cjs)
# Idempotent: each tool is skipped when it is already present at the expected version.
# Afterwards put the helm directory on PATH:  export PATH="$(scripts/install-tools.sh --print-bin-dir):$PATH"
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
HELM_DOCS_VERSION="${HELM_DOCS_VERSION:-v1.14.2}"
KUBE_SCORE_VERSION="${KUBE_SCORE_VERSION:-v1.20.0}"
TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/norce-order-bridge/tools"
BIN_DIR="$TOOLS_DIR/bin"

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { printf 'install-tools: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == "--print-bin-dir" ]]; then
    printf '%s\n' "$BIN_DIR"
    exit 0
fi

install_helm() {
    if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
        PATH="/usr/local/go/bin:$PATH"
    fi
    local helm_bin="$BIN_DIR/helm" stamp="$BIN_DIR/.helm-build"
    command -v go >/dev/null 2>&1 || die "Go toolchain not found on PATH (needed to build helm with 'go install'); install Go >= 1.26"
    # Same link flags as helm's release Makefile: the version `helm version` prints, and the
    # default Kubernetes version of `helm template`/`helm lint` (from the client-go helm uses).
    local gomod k8s_minor ldflags
    gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    [[ -n "$gomod" && -f "$gomod" ]] || die "could not fetch helm.sh/helm/v3@${HELM_VERSION} from the Go module proxy"
    k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$gomod")"
    [[ "$k8s_minor" =~ ^[0-9]+$ ]] || die "could not read the client-go version from $gomod"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}"
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor}"
    if [[ -x "$helm_bin" && -f "$stamp" && "$(cat "$stamp")" == "$ldflags" ]] \
        && go version -m "$helm_bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+helm\.sh/helm/v3[[:space:]]+${HELM_VERSION}([[:space:]]|$)"; then
        log "helm ${HELM_VERSION} already installed at $helm_bin"
        return
    fi
    mkdir -p "$BIN_DIR"
    log "building helm ${HELM_VERSION} with 'go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION}' into $BIN_DIR (takes a few minutes on 2 cores)"
    local start=$SECONDS
    rm -f "$stamp"
    GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
    printf '%s' "$ldflags" > "$stamp"
    log "helm built in $((SECONDS - start))s: $("$helm_bin" version --short) (default Kubernetes version 1.${k8s_minor})"
}

# install_go_tool NAME MODULE VERSION LDFLAGS VERSION_ARGS...: `go install MODULE/cmd/NAME@VERSION`
# into $BIN_DIR, unless the binary there was built from MODULE at VERSION.
install_go_tool() {
    local name="$1" module="$2" version="$3" ldflags="$4"
    shift 4
    if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
        PATH="/usr/local/go/bin:$PATH"
    fi
    local bin="$BIN_DIR/$name"
    command -v go >/dev/null 2>&1 || die "Go toolchain not found on PATH (needed to build $name with 'go install'); install Go >= 1.26"
    if [[ -x "$bin" ]] \
        && go version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+${module//./\\.}[[:space:]]+${version}([[:space:]]|$)"; then
        log "$name ${version} already installed at $bin"
        return
    fi
    mkdir -p "$BIN_DIR"
    log "building $name ${version} with 'go install ${module}/cmd/${name}@${version}' into $BIN_DIR"
    local start=$SECONDS
    GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "${module}/cmd/${name}@${version}"
    log "$name built in $((SECONDS - start))s: $("$bin" "$@" 2>&1 | head -n1)"
}

install_helm_docs() {
    install_go_tool helm-docs github.com/norwoodj/helm-docs "$HELM_DOCS_VERSION" \
        "-s -w -X main.version=${HELM_DOCS_VERSION#v}" --version
}

install_kube_score() {
    install_go_tool kube-score github.com/zegl/kube-score "$KUBE_SCORE_VERSION" \
        "-s -w -X main.version=${KUBE_SCORE_VERSION#v}" version
}

install_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        log "promtool already installed at $(command -v promtool): $(promtool --version 2>&1 | head -n1)"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "promtool is missing and apt-get is not available; install Prometheus's promtool (Debian package 'prometheus') by hand"
    [[ "$(id -u)" == "0" ]] || die "promtool is missing; installing Debian's 'prometheus' package needs root: run 'sudo apt-get install -y prometheus' or re-run this script as root"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show prometheus >/dev/null 2>&1; then
        log "package 'prometheus' not in the apt lists; running apt-get update"
        apt-get update -q
    fi
    log "installing Debian package 'prometheus' (provides /usr/bin/promtool and /usr/bin/prometheus)"
    if ! apt-get install -y -q --no-install-recommends prometheus; then
        log "install failed (stale apt lists?); running apt-get update and retrying"
        apt-get update -q
        apt-get install -y -q --no-install-recommends prometheus
    fi
    # The package starts a system service where an init system runs; the tests never need it.
    log "promtool installed: $(promtool --version 2>&1 | head -n1)"
}

install_asyncapi_parser() {
    # To change a version: edit scripts/asyncapi-tools/package.json, then re-lock with
    # `npm install --package-lock-only --prefix scripts/asyncapi-tools` and commit both files.
    local src dir="$TOOLS_DIR/asyncapi" stamp
    src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/asyncapi-tools"
    [[ -f "$src/package.json" && -f "$src/package-lock.json" ]] || die "missing $src/package.json or package-lock.json"
    command -v node >/dev/null 2>&1 || die "node not found on PATH (needed to run the AsyncAPI parser); install Node.js >= 18 (Debian package 'nodejs')"
    command -v npm >/dev/null 2>&1 || die "npm not found on PATH (needed to install the AsyncAPI parser); install Debian's 'npm' package"
    stamp="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)"
    if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" \
          && -f "$dir/node_modules/@asyncapi/parser/package.json" \
          && -f "$dir/node_modules/@asyncapi/avro-schema-parser/package.json" ]]; then
        log "AsyncAPI parser already installed in $dir (lock $stamp)"
        return
    fi
    mkdir -p "$dir"
    rm -f "$dir/.stamp"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    log "installing the AsyncAPI parser into $dir with 'npm ci' (lock $stamp)"
    local start=$SECONDS
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    printf '%s' "$stamp" > "$dir/.stamp"
    log "AsyncAPI parser installed in $((SECONDS - start))s: @asyncapi/parser $(node -p "require('$dir/node_modules/@asyncapi/parser/package.json').version"), @asyncapi/avro-schema-parser $(node -p "require('$dir/node_modules/@asyncapi/avro-schema-parser/package.json').version")"
}

install_helm
install_helm_docs
install_kube_score
install_promtool
install_asyncapi_parser
log "done; add helm, helm-docs and kube-score to PATH with: export PATH=\"$BIN_DIR:\$PATH\""
