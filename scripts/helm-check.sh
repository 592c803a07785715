#!/usr/bin/env bash
# Checks the Helm chart offline: for every values file in charts/transferlab/ci/ and every
# charts/transferlab/values-*.yaml, `helm lint --strict` and `helm template`, then validates every
# rendered object with kubernetes-models (scripts/validate-manifests.ts) and, when
# TRANSFERLAB_KUBECONFIG names a kubeconfig, with that API server (scripts/server-side-apply.ts:
# server-side apply, dry run, into namespace "transferlab", which it creates if missing).
#
#   bash scripts/helm-check.sh [OUT_DIR]
#
# The chart is checked with its real subcharts (NATS, MinIO). Their repositories cannot be reached
# here, so the packaged upstream charts come from TRANSFERLAB_SUBCHARTS_DIR (default
# ../shared/charts beside the repository), checked against its SHA256SUMS, and are copied into
# charts/ of a scratch copy of the chart: the repository's own chart folder is never touched, and
# nothing of theirs is committed. A missing folder or package is an error, never a skip.
#
# OUT_DIR (default: a temporary folder, removed at the end) receives chart/ (the copy with the
# subcharts) and rendered/<values file> (the `helm template` output of each).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

helm=$(bash scripts/helm-get.sh)

if [ $# -ge 1 ]; then
  out=$1
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
else
  out=$(mktemp -d "${TMPDIR:-/tmp}/transferlab-helm-check.XXXXXX")
  trap 'rm -rf "$out"' EXIT
fi
# helm keeps no state of ours: caches, repositories and plugins go to a folder of their own.
export HELM_CACHE_HOME="$out/helm-home/cache" HELM_CONFIG_HOME="$out/helm-home/config" HELM_DATA_HOME="$out/helm-home/data"

chart="$out/chart"
rm -rf "$chart" "$out/rendered"
mkdir -p "$out/rendered"
cp -R charts/transferlab "$chart"
rm -rf "$chart/charts"

# The packaged subcharts, one per dependency in Chart.yaml, at exactly the pinned version.
subcharts=${TRANSFERLAB_SUBCHARTS_DIR:-$repo/../shared/charts}
if [ ! -d "$subcharts" ]; then
  echo "helm-check: no subchart folder at $subcharts (set TRANSFERLAB_SUBCHARTS_DIR to the folder holding nats-*.tgz, minio-*.tgz and SHA256SUMS)" >&2
  exit 1
fi
if ! (cd "$subcharts" && sha256sum --check --quiet SHA256SUMS); then
  echo "helm-check: the packaged subcharts in $subcharts do not match their SHA256SUMS" >&2
  exit 1
fi
# "name version" per dependency; a version range fails here (set -e), since only the pinned
# versions are tested.
dependencies=$(node --input-type=module -e '
import { readFileSync } from "node:fs";
import { parse } from "yaml";
const { dependencies = [] } = parse(readFileSync(process.argv[1], "utf8"));
for (const { name, version } of dependencies) {
  if (!/^\d+\.\d+\.\d+$/.test(String(version))) throw new Error(`${name}: pin an exact version, not ${version}`);
  console.log(`${name} ${version}`);
}' "$chart/Chart.yaml")
mkdir -p "$chart/charts"
while IFS=' ' read -r name version; do
  package="$subcharts/$name-$version.tgz"
  if [ ! -f "$package" ]; then
    echo "helm-check: Chart.yaml needs $name $version, and $package is missing" >&2
    exit 1
  fi
  cp "$package" "$chart/charts/"
done <<<"$dependencies"

status=0
shopt -s nullglob
values_files=("$chart"/ci/*.yaml "$chart"/values-*.yaml)
if [ ${#values_files[@]} -eq 0 ]; then
  echo "helm-check: no values files in charts/transferlab/ci/" >&2
  exit 1
fi
for values in "${values_files[@]}"; do
  name=$(basename "$values")
  echo "== $name"
  if ! "$helm" lint --strict "$chart" -f "$values" --namespace transferlab; then
    echo "helm-check: helm lint --strict failed with ${values#"$chart"/}" >&2
    status=1
    continue
  fi
  # Kubernetes 1.24 is the oldest the chart supports (gRPC probes): render for it.
  if ! "$helm" template transferlab "$chart" -f "$values" --namespace transferlab --kube-version 1.24.0 \
    >"$out/rendered/$name"; then
    echo "helm-check: helm template failed with ${values#"$chart"/}" >&2
    status=1
    continue
  fi
done

# Monitoring is on by default exactly where the Prometheus Operator's CRDs are served
# (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1"): render the defaults both ways.
echo "== monitoring defaults (with and without monitoring.coreos.com/v1)"
default_values="$chart/ci/default-values.yaml"
if "$helm" template transferlab "$chart" -f "$default_values" --namespace transferlab \
  --api-versions monitoring.coreos.com/v1 >"$out/with-operator.yaml" &&
  "$helm" template transferlab "$chart" -f "$default_values" --namespace transferlab >"$out/without-operator.yaml"; then
  for kind in PodMonitor ServiceMonitor; do
    if ! grep -q "^kind: $kind\$" "$out/with-operator.yaml"; then
      echo "helm-check: no $kind by default where the cluster serves monitoring.coreos.com/v1" >&2
      status=1
    fi
  done
  if ! grep -q '^    grafana_dashboard: "1"' "$out/with-operator.yaml"; then
    echo "helm-check: no dashboard ConfigMaps by default where the cluster serves monitoring.coreos.com/v1" >&2
    status=1
  fi
  if grep -qE '^kind: (PodMonitor|ServiceMonitor)$|^    grafana_dashboard:' "$out/without-operator.yaml"; then
    echo "helm-check: monitoring objects rendered for a cluster without the Prometheus Operator's CRDs" >&2
    status=1
  fi
  (cd "$repo" && node --import tsx scripts/validate-manifests.ts "$out/with-operator.yaml") || status=1
else
  echo "helm-check: helm template of the monitoring defaults failed" >&2
  status=1
fi

echo "== validate rendered manifests"
rendered=("$out"/rendered/*.yaml)
if [ ${#rendered[@]} -gt 0 ]; then
  (cd "$repo" && node --import tsx scripts/validate-manifests.ts "${rendered[@]}") || status=1
fi

# With a real API server at hand, it checks every object too (dry run: nothing is stored).
if [ -n "${TRANSFERLAB_KUBECONFIG:-}" ] && [ ${#rendered[@]} -gt 0 ]; then
  echo "== server-side apply (dry run) against \$TRANSFERLAB_KUBECONFIG"
  (cd "$repo" && node --import tsx scripts/server-side-apply.ts --namespace transferlab "${rendered[@]}") || status=1
fi

if [ $status -eq 0 ]; then
  echo "helm-check: ok (${#values_files[@]} values files)"
else
  echo "helm-check: FAILED" >&2
fi
exit $status
