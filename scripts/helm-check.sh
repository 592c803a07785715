#!/usr/bin/env bash
# Checks the Helm chart offline: for every values file in charts/transferlab/ci/, `helm lint
# --strict` and `helm template`, then validates every rendered object with kubernetes-models
# (scripts/validate-manifests.ts).
#
#   bash scripts/helm-check.sh [OUT_DIR]
#
# The subcharts (NATS, MinIO) cannot be downloaded here, and helm refuses to render a chart whose
# dependencies are missing even when they are disabled. So the check runs on a copy of the chart
# with a local stub chart in place of each dependency: Chart.yaml with the name and a version that
# fits the constraint, and one ConfigMap that shows the values the stub received (so tests can
# check the conditions and the values passed down). Every CI values file keeps the subcharts off.
#
# OUT_DIR (default: a temporary folder, removed at the end) receives chart/ (the copy with the
# stubs) and rendered/<values file> (the `helm template` output of each).
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

# One stub chart per dependency in Chart.yaml.
node --input-type=module - "$chart" <<'JS'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

const chart = process.argv[2];
const { dependencies = [] } = parse(readFileSync(join(chart, 'Chart.yaml'), 'utf8'));
for (const { name, version } of dependencies) {
  // "~1.3.0", "^5.4.0", "1.x.x" → the lowest version the constraint admits.
  const stubVersion = String(version).replace(/^[~^=v\s]+/, '').replace(/[xX*]/g, '0');
  if (!/^\d+\.\d+\.\d+$/.test(stubVersion)) throw new Error(`cannot stub ${name} ${version}`);
  const dir = join(chart, 'charts', name);
  mkdirSync(join(dir, 'templates'), { recursive: true });
  writeFileSync(
    join(dir, 'Chart.yaml'),
    `apiVersion: v2\nname: ${name}\nversion: ${stubVersion}\ndescription: local stub of the ${name} chart for offline checks\n`,
  );
  writeFileSync(
    join(dir, 'templates', 'stub.yaml'),
    [
      'apiVersion: v1',
      'kind: ConfigMap',
      'metadata:',
      `  name: {{ .Release.Name }}-${name}-stub`,
      '  namespace: {{ .Release.Namespace }}',
      'data:',
      '  values: {{ toJson .Values | quote }}',
      '',
    ].join('\n'),
  );
}
JS

status=0
shopt -s nullglob
values_files=("$chart"/ci/*.yaml)
if [ ${#values_files[@]} -eq 0 ]; then
  echo "helm-check: no values files in charts/transferlab/ci/" >&2
  exit 1
fi
for values in "${values_files[@]}"; do
  name=$(basename "$values")
  echo "== $name"
  if ! "$helm" lint --strict "$chart" -f "$values" --namespace transferlab; then
    echo "helm-check: helm lint --strict failed with ci/$name" >&2
    status=1
    continue
  fi
  # Kubernetes 1.24 is the oldest the chart supports (gRPC probes): render for it.
  if ! "$helm" template transferlab "$chart" -f "$values" --namespace transferlab --kube-version 1.24.0 \
    >"$out/rendered/$name"; then
    echo "helm-check: helm template failed with ci/$name" >&2
    status=1
    continue
  fi
done

echo "== validate rendered manifests"
rendered=("$out"/rendered/*.yaml)
if [ ${#rendered[@]} -gt 0 ]; then
  (cd "$repo" && node --import tsx scripts/validate-manifests.ts "${rendered[@]}") || status=1
fi

if [ $status -eq 0 ]; then
  echo "helm-check: ok (${#values_files[@]} values files)"
else
  echo "helm-check: FAILED" >&2
fi
exit $status
