#!/usr/bin/env bash
# The checks of deploy/ that need the real tools (issue 14), called by .ci/run before the tests; runs on its
# own too (`.ci/deploy-checks.sh`). What each step guards:
#
#   prometheus   `promtool check rules` parses runway-alerts.yml; `promtool test rules` runs the unit tests of
#                deploy/prometheus/tests/ (every alert firing and quiet, under a static "runway" job and the
#                shared "kubernetes-pods" job); prometheusrule.yaml carries exactly the same groups.
#   manifests    every kustomization (deploy/kubernetes/{edge,sidecar,redis}, deploy/prometheus) and
#                networkpolicy-kong.yaml, rendered by `kubectl kustomize`, validated with kubernetes-validate
#                --strict (unknown fields are errors) against every Kubernetes version from 1.30, the oldest
#                the manifests support (the preStop sleep action), to the newest the pinned
#                kubernetes-validate knows; the custom resources (cert-manager Certificate, Prometheus
#                Operator PodMonitor and PrometheusRule) with check-jsonschema against their CRD schemas;
#                any other kind without a schema fails.
#   CI examples  check-jsonschema's vendored schemas: GitLab CI for deploy/gitlab/.gitlab-ci.yml, GitHub
#                workflows for deploy/github/deploy.yml.
#   self-test    each validator refuses a copy with one misspelt field, so a check that passes vacuously fails.
#
# Installs: Debian's `prometheus` package for promtool (no daemon is started: policy-rc.d, as in .ci/run),
# and pinned Python tools in a virtualenv cached under ~/.cache (kubernetes-validate, check-jsonschema, and the
# cloudcoil model packages that carry the cert-manager and Prometheus Operator CRD schemas).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

# Pinned so that a new schema release cannot turn CI red on its own; bump deliberately.
PY_TOOLS=(
  "kubernetes-validate==1.37.0"
  "check-jsonschema==0.39.0"
  "pyyaml==6.0.3"
  "cloudcoil-models-prometheus-operator==0.80.1.0"
  "cloudcoil-models-cert-manager==1.17.1.0"
)
# Kubernetes versions the manifests must validate against: 1.30 (the oldest supported, see
# deploy/kubernetes/README.md) and every later one kubernetes-validate ships.
MIN_K8S=1.30
# Custom resource kinds (apiVersion kind) kubernetes-validate has no schema for, validated below instead.
CUSTOM_KINDS=("cert-manager.io/v1 Certificate" "monitoring.coreos.com/v1 PodMonitor" "monitoring.coreos.com/v1 PrometheusRule")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

echo "== deploy checks: tools"
if ! command -v promtool >/dev/null 2>&1; then
  # Debian's prometheus package ships promtool; its postinst would start a Prometheus server: a policy-rc.d
  # that exits 101 forbids that (the same trick as .ci/run).
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  status=0
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null || status=$?
  if [ -n "$added_policy" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
  if [ "$status" -ne 0 ]; then
    echo "installing prometheus (promtool) failed ($status)" >&2
    exit "$status"
  fi
fi
promtool --version 2>&1 | head -n 1

# One virtualenv per set of pins, kept between runs on the same machine.
pins_hash=$(printf '%s\n' "${PY_TOOLS[@]}" | sha256sum | cut -c1-12)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/runway-deploy-checks/venv-$pins_hash"
tools_ok() {
  "$1" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("kubernetes_validate", "check_jsonschema", "yaml", "cloudcoil.models.cert_manager", "cloudcoil.models.prometheus_operator")))' 2>/dev/null
}
py="$venv/bin/python"
if ! tools_ok "$py"; then
  rm -rf "$venv"
  if python3 -m venv "$venv" 2>/dev/null; then
    "$py" -m pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
  else
    # No venv module (a Debian system python without python3-venv): the fallbacks .ci/run uses for requests.
    rm -rf "$venv"
    py=python3
    python3 -m pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}" \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${PY_TOOLS[@]}"
  fi
  tools_ok "$py" || { echo "the Python tools did not install: ${PY_TOOLS[*]}" >&2; exit 1; }
fi
kv=("$py" -m kubernetes_validate)
cj=("$py" -m check_jsonschema)
echo "kubernetes-validate $("${kv[@]}" --version), $("${cj[@]}" --version)"
if command -v kubectl >/dev/null 2>&1; then
  echo "kubectl kustomize: $(kubectl version --client 2>/dev/null | grep -i kustomize || echo '?')"
else
  echo "kubectl not found: rendering with .ci/deploy_checks.py's fallback renderer"
fi
echo "tools ready after $((SECONDS - started)) s"

echo "== deploy checks: prometheus (promtool)"
promtool check rules deploy/prometheus/runway-alerts.yml
promtool test rules deploy/prometheus/tests/*.yml
"$py" .ci/deploy_checks.py prometheusrule

echo "== deploy checks: manifests"
versions=$("$py" - "$MIN_K8S" <<'EOF'
import os, sys, kubernetes_validate
base = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
minimum = tuple(int(p) for p in sys.argv[1].split("."))
found = set()
for name in os.listdir(base):
    if name.endswith("-local-strict"):
        parts = tuple(int(p) for p in name[1:].split("-")[0].split(".")[:2])
        if parts >= minimum:
            found.add(parts)
print(" ".join(f"{a}.{b}" for a, b in sorted(found)))
EOF
)
[ -n "$versions" ] || { echo "kubernetes-validate ships no schema for Kubernetes >= $MIN_K8S" >&2; exit 1; }
echo "Kubernetes versions: $versions"

rendered=()
for dir in deploy/kubernetes/edge deploy/kubernetes/sidecar deploy/kubernetes/redis deploy/prometheus; do
  out="$work/$(echo "$dir" | tr / _).yaml"
  if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize "$dir" >"$out"
    "$py" .ci/deploy_checks.py same-render "$dir" "$out"
  else
    "$py" .ci/deploy_checks.py render "$dir" >"$out"
  fi
  rendered+=("$out")
done
# Applied on its own in Kong's namespace (not in a kustomization).
rendered+=("deploy/kubernetes/edge/networkpolicy-kong.yaml")

log="$work/validate.log"
for version in $versions; do
  if ! "${kv[@]}" --strict --quiet -k "$version.0" "${rendered[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    echo "kubernetes-validate: the manifests do not validate against Kubernetes $version" >&2
    exit 1
  fi
  # A kind without a schema is only a warning to kubernetes-validate: accept the custom kinds checked
  # below, and nothing else (a misspelt apiVersion would otherwise pass unchecked).
  while IFS= read -r line; do
    kind=$(sed -n "s/.*Couldn't find schema for kind \([^ ]*\) with api version \([^ ]*\) .*/\2 \1/p" <<<"$line")
    known=""
    for custom in "${CUSTOM_KINDS[@]}"; do [ "$kind" = "$custom" ] && known=1; done
    if [ -z "$known" ]; then
      echo "kubernetes-validate ($version): $line" >&2
      exit 1
    fi
  done < <(grep -v '^INFO' "$log" || true)
done
echo "kubernetes-validate --strict: ${#rendered[@]} files, Kubernetes $versions: ok"

"$py" .ci/deploy_checks.py crd-schemas "$work/schemas"
"$py" .ci/deploy_checks.py split "$work/objects" "${rendered[@]}"
for custom in "${CUSTOM_KINDS[@]}"; do
  kind=${custom#* }
  compgen -G "$work/objects/$kind/*.json" >/dev/null || { echo "no $kind rendered: expected one" >&2; exit 1; }
  echo "$kind ($custom): $("${cj[@]}" --schemafile "$work/schemas/$kind.json" "$work/objects/$kind"/*.json)"
done

echo "== deploy checks: CI examples"
"${cj[@]}" --builtin-schema vendor.gitlab-ci deploy/gitlab/.gitlab-ci.yml
"${cj[@]}" --builtin-schema vendor.github-workflows deploy/github/deploy.yml

echo "== deploy checks: self-test (each validator refuses a misspelt field)"
sed 's/automountServiceAccountToken:/automountServiceAccountTokn:/' "$work/deploy_kubernetes_redis.yaml" >"$work/bad.yaml"
if "${kv[@]}" --strict --quiet -k "${versions%% *}.0" "$work/bad.yaml" >/dev/null 2>&1; then
  echo "self-test: kubernetes-validate accepted a misspelt field" >&2
  exit 1
fi
"$py" - "$work" <<'EOF'
import json, sys, glob
doc = json.load(open(glob.glob(f"{sys.argv[1]}/objects/PodMonitor/*.json")[0]))
doc["spec"]["podMetricEndpoints"] = doc["spec"].pop("podMetricsEndpoints")
json.dump(doc, open(f"{sys.argv[1]}/bad-podmonitor.json", "w"))
EOF
if "${cj[@]}" --schemafile "$work/schemas/PodMonitor.json" "$work/bad-podmonitor.json" >/dev/null 2>&1; then
  echo "self-test: the PodMonitor schema accepted a misspelt field" >&2
  exit 1
fi
sed 's/^\( *\)id_tokens:/\1id_token:/' deploy/gitlab/.gitlab-ci.yml >"$work/bad-gitlab-ci.yml"
if "${cj[@]}" --builtin-schema vendor.gitlab-ci "$work/bad-gitlab-ci.yml" >/dev/null 2>&1; then
  echo "self-test: the GitLab CI schema accepted a misspelt keyword" >&2
  exit 1
fi
echo "self-test: ok"

echo "== deploy checks passed in $((SECONDS - started)) s"
