#!/usr/bin/env bash
# Checks everything under deploy/ without a cluster or a Docker engine:
#   1. builds the release binaries the Dockerfiles build (same cargo command);
#   2. renders both Kubernetes overlays, the sweep-submit Job (deploy/k8s/submit), and a site
#      overlay made the way docs/DEPLOY.md says (secrets and admin token from
#      `coordinator tls init`), with kubectl's kustomize;
#   3. validates every rendered object against the Kubernetes schemas (kubernetes-validate,
#      offline, strict);
#   4. runs the checkov policy scan on the rendered manifests and on the Dockerfiles;
#   5. deploy/lint.py: parses the Dockerfiles, checks every flag the manifests (the Job's
#      `coordinator submit` included), images and systemd units pass to the binaries against
#      their --help, and that every path a container is given is mounted (Secret and ConfigMap
#      keys included).
# Any failure fails the script. Tools are pinned and installed into .venv-deploy.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/deploy-check
rm -rf "$out" && mkdir -p "$out"

venv=.venv-deploy
if [[ ! -x $venv/bin/checkov ]] || ! cmp -s scripts/deploy-requirements.txt "$venv/requirements.txt"; then
    echo "check-deploy: installing kubectl, kubernetes-validate and checkov into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/deploy-requirements.txt
    cp scripts/deploy-requirements.txt "$venv/requirements.txt"
fi
kubectl="$venv/bin/kubectl"

echo "check-deploy: cargo build --release --locked -p coordinator -p worker (what the Dockerfiles run)"
cargo build --release --locked -p coordinator -p worker

# A site overlay as docs/DEPLOY.md builds it, to prove that flow renders too.
site=$out/site
mkdir -p "$site"
target/release/coordinator tls init --out "$site/secrets" --host sweep-coordinator \
    --host sweep-coordinator.sweep.svc --force > /dev/null
cat > "$site/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../deploy/k8s/overlays/gpu
secretGenerator:
  - name: sweep-token
    namespace: sweep
    behavior: replace
    files: [secrets/token]
  - name: sweep-admin-token
    namespace: sweep
    behavior: replace
    files: [secrets/admin-token]
  - name: sweep-coordinator-tls
    namespace: sweep
    behavior: replace
    files: [secrets/server.pem, secrets/server-key.pem, secrets/ca.pem]
  - name: sweep-worker-tls
    namespace: sweep
    behavior: replace
    files: [secrets/ca.pem, secrets/worker.pem, secrets/worker-key.pem]
YAML

rendered=()
for overlay in deploy/k8s/overlays/gpu deploy/k8s/overlays/cpu-only deploy/k8s/submit "$site"; do
    name=$(basename "$overlay")
    "$kubectl" kustomize "$overlay" > "$out/$name.yaml"
    rendered+=("$out/$name.yaml")
    echo "check-deploy: rendered $overlay ($(grep -c '^kind:' "$out/$name.yaml") objects)"
done
grep -q 'nvidia.com/gpu: 1' "$out/gpu.yaml" || { echo "gpu overlay requests no GPU" >&2; exit 1; }
if grep -q 'nvidia.com/gpu' "$out/cpu-only.yaml"; then echo "cpu-only overlay mentions GPUs" >&2; exit 1; fi
grep -q '^kind: Job' "$out/submit.yaml" || { echo "deploy/k8s/submit renders no Job" >&2; exit 1; }
# The site's admin token is the generated one (not the empty placeholder) and not the worker's.
"$venv/bin/python" - "$out/site.yaml" <<'PY'
import sys, yaml
data = {d["metadata"]["name"]: d.get("data") or {} for d in yaml.safe_load_all(open(sys.argv[1]))
        if d and d["kind"] == "Secret"}
admin, worker = data["sweep-admin-token"].get("admin-token"), data["sweep-token"].get("token")
if not admin or admin == worker:
    sys.exit("site overlay: the admin token is not replaced, or equals the worker token")
PY

"$venv/bin/kubernetes-validate" --strict --quiet "${rendered[@]}"
echo "check-deploy: schemas ok (kubernetes-validate --strict)"

# The scan must not phone home (no network here); skip-download keeps it offline.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
mkdir -p "$out/scan" && cp "$out/gpu.yaml" "$out/cpu-only.yaml" "$out/submit.yaml" "$out/scan/"
"$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d "$out/scan"
"$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile -d deploy/docker
echo "check-deploy: checkov ok"

"$venv/bin/python" deploy/lint.py target/release "${rendered[@]}"
echo "check-deploy: all deployment checks passed"
