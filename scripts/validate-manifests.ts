// Validates rendered Kubernetes manifests (multi-document YAML, e.g. `helm template` output).
//
//   node --import tsx scripts/validate-manifests.ts FILE...   (`-` reads standard input)
//
// Each object is checked against its API type with the matching kubernetes-models class (types,
// required fields, formats; CRDs through @kubernetes-models/* packages, e.g. the Prometheus
// Operator's ServiceMonitor). kubernetes-models does not flag unknown fields, so a few checks
// across objects follow: names, labels, duplicate objects and env variables, Deployment
// selectors, Services that select pods and name ports those pods have, ConfigMaps and Roles that
// are referenced but not rendered. Exit code 1 when any object fails.
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { parseAllDocuments } from 'yaml';

export interface ManifestObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [key: string]: unknown };
  [key: string]: unknown;
}

export interface ManifestProblem {
  /** `Kind/name` of the object at fault, or the document number when it has none. */
  object: string;
  message: string;
}

/** API groups whose models live in a package of their own (custom resources). */
const CRD_MODEL_PACKAGES: Record<string, string> = {
  'monitoring.coreos.com': '@kubernetes-models/prometheus-operator',
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
/** Kinds whose names must be DNS-1123 labels rather than subdomains. */
const LABEL_NAMED_KINDS = new Set(['Service', 'Namespace']);

export const objectName = (object: Pick<ManifestObject, 'kind' | 'metadata'>): string =>
  `${object.kind}/${object.metadata?.name ?? '?'}`;

/** Parses multi-document YAML into objects; empty documents are skipped, YAML errors thrown. */
export function parseManifests(text: string, source = 'manifest'): ManifestObject[] {
  const objects: ManifestObject[] = [];
  parseAllDocuments(text).forEach((document, index) => {
    const error = document.errors[0];
    if (error) throw new Error(`${source}: document ${index + 1}: ${error.message}`);
    const value: unknown = document.toJS();
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new Error(`${source}: document ${index + 1} is not a mapping`);
    }
    const object = value as ManifestObject;
    if (typeof object.apiVersion !== 'string' || typeof object.kind !== 'string') {
      throw new Error(`${source}: document ${index + 1} has no apiVersion or kind`);
    }
    objects.push(object);
  });
  return objects;
}

/** The module that exports the kubernetes-models class of `apiVersion`/`kind`. */
export function modelModule(apiVersion: string, kind: string): string {
  const slash = apiVersion.indexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  if (!/^[A-Za-z0-9]+$/.test(kind) || !/^v[0-9a-z]+$/.test(version) || !/^[a-z0-9.-]*$/.test(group)) {
    throw new Error(`'${apiVersion}' '${kind}' is not an API version and kind`);
  }
  if (group === '') return `kubernetes-models/${version}/${kind}`;
  const crdPackage = CRD_MODEL_PACKAGES[group];
  return crdPackage ? `${crdPackage}/${group}/${version}/${kind}` : `kubernetes-models/${group}/${version}/${kind}`;
}

type ModelClass = new (data: unknown) => { validate(): void };

async function loadModel(apiVersion: string, kind: string): Promise<ModelClass> {
  const specifier = modelModule(apiVersion, kind);
  let module: Record<string, unknown>;
  try {
    module = (await import(specifier)) as Record<string, unknown>;
  } catch (error) {
    throw new Error(`no model for ${apiVersion} ${kind} (${specifier}): ${(error as Error).message.split('\n')[0]}`);
  }
  const model = module[kind];
  if (typeof model !== 'function') throw new Error(`${specifier} exports no ${kind}`);
  return model as ModelClass;
}

interface PodTemplate {
  owner: ManifestObject;
  labels: Record<string, string>;
  spec: PodSpec;
}
interface Container {
  name: string;
  ports?: { name?: string; containerPort: number }[];
  env?: { name: string }[];
  envFrom?: { configMapRef?: { name: string } }[];
}
interface PodSpec {
  containers?: Container[];
  initContainers?: Container[];
  volumes?: { name: string; configMap?: { name: string } }[];
}

/** The pod template of a workload object, if it has one. */
function podTemplateOf(object: ManifestObject): PodTemplate | undefined {
  const spec = object.spec as Record<string, unknown> | undefined;
  if (!spec) return undefined;
  if (object.kind === 'Pod') {
    return { owner: object, labels: object.metadata.labels ?? {}, spec: spec as PodSpec };
  }
  const jobTemplate = spec.jobTemplate as { spec?: Record<string, unknown> } | undefined;
  const template = (jobTemplate?.spec?.template ?? spec.template) as
    { metadata?: { labels?: Record<string, string> }; spec?: PodSpec } | undefined;
  if (!template?.spec) return undefined;
  return { owner: object, labels: template.metadata?.labels ?? {}, spec: template.spec };
}

function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

function checkNameAndLabels(object: ManifestObject, problem: (message: string) => void): void {
  const name = object.metadata?.name;
  if (typeof name !== 'string' || name === '') {
    problem('metadata.name is missing');
    return;
  }
  if (LABEL_NAMED_KINDS.has(object.kind)) {
    if (name.length > 63 || !DNS_LABEL.test(name)) problem(`name '${name}' is not a DNS-1123 label`);
  } else if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
    problem(`name '${name}' is not a DNS-1123 subdomain`);
  }
  const labelSets: [string, Record<string, string> | undefined][] = [['metadata.labels', object.metadata.labels]];
  const template = podTemplateOf(object);
  if (template && template.owner === object && object.kind !== 'Pod') {
    labelSets.push(['pod template labels', template.labels]);
  }
  for (const [where, labels] of labelSets) {
    for (const [key, value] of Object.entries(labels ?? {})) {
      const slash = key.lastIndexOf('/');
      const prefix = slash < 0 ? '' : key.slice(0, slash);
      const short = slash < 0 ? key : key.slice(slash + 1);
      if ((prefix && !DNS_SUBDOMAIN.test(prefix)) || short.length > 63 || !LABEL_NAME.test(short)) {
        problem(`${where}: '${key}' is not a label key`);
      }
      if (typeof value !== 'string' || value.length > 63 || !LABEL_VALUE.test(value)) {
        problem(`${where}: ${key}='${String(value)}' is not a label value`);
      }
    }
  }
}

/** Checks every object; returns the problems (none: all valid). */
export async function validateManifests(objects: ManifestObject[]): Promise<ManifestProblem[]> {
  const problems: ManifestProblem[] = [];
  const seen = new Set<string>();
  const configMaps = new Set<string>();
  const roles = new Set<string>();
  const templates: PodTemplate[] = [];
  const key = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;

  for (const object of objects) {
    const problem = (message: string) => problems.push({ object: objectName(object), message });
    try {
      const Model = await loadModel(object.apiVersion, object.kind);
      new Model(object).validate();
    } catch (error) {
      problem((error as Error).message);
    }
    checkNameAndLabels(object, problem);
    const identity = `${object.apiVersion} ${object.kind} ${key(object.metadata?.namespace, object.metadata?.name)}`;
    if (seen.has(identity)) problem('rendered twice');
    seen.add(identity);
    if (object.kind === 'ConfigMap') configMaps.add(key(object.metadata.namespace, object.metadata.name));
    if (object.kind === 'Role') roles.add(key(object.metadata.namespace, object.metadata.name));

    const template = podTemplateOf(object);
    if (!template) continue;
    templates.push(template);
    const selector = (object.spec as { selector?: { matchLabels?: Record<string, string> } }).selector;
    if (selector?.matchLabels && !matches(selector.matchLabels, template.labels)) {
      problem('spec.selector.matchLabels does not match the pod template labels');
    }
    for (const volume of template.spec.volumes ?? []) {
      const sources = Object.keys(volume).filter((key) => key !== 'name');
      if (sources.length !== 1) problem(`volume ${volume.name} has ${sources.length} sources (${sources.join(', ')})`);
    }
    for (const container of [...(template.spec.containers ?? []), ...(template.spec.initContainers ?? [])]) {
      const names = new Set<string>();
      for (const variable of container.env ?? []) {
        if (names.has(variable.name)) problem(`container ${container.name}: env ${variable.name} is set twice`);
        names.add(variable.name);
      }
    }
  }

  // References between the objects of one render.
  for (const object of objects) {
    const problem = (message: string) => problems.push({ object: objectName(object), message });
    const namespace = object.metadata?.namespace;
    if (object.kind === 'Service') {
      const spec = object.spec as { selector?: Record<string, string>; ports?: { targetPort?: string | number }[] };
      if (!spec.selector) continue;
      const selected = templates.filter(
        (t) => t.owner.metadata.namespace === namespace && matches(spec.selector!, t.labels),
      );
      if (selected.length === 0) {
        problem(`selects no pods rendered here (${JSON.stringify(spec.selector)})`);
        continue;
      }
      for (const port of spec.ports ?? []) {
        if (typeof port.targetPort !== 'string') continue;
        const found = selected.some((t) =>
          (t.spec.containers ?? []).some((c) => (c.ports ?? []).some((p) => p.name === port.targetPort)),
        );
        if (!found) problem(`targetPort '${port.targetPort}' is not a named port of the pods it selects`);
      }
    }
    if (object.kind === 'RoleBinding') {
      const roleRef = object.roleRef as { kind: string; name: string };
      if (roleRef.kind === 'Role' && !roles.has(key(namespace, roleRef.name))) {
        problem(`roleRef names Role ${roleRef.name}, which is not rendered`);
      }
    }
  }
  for (const template of templates) {
    const problem = (message: string) => problems.push({ object: objectName(template.owner), message });
    const namespace = template.owner.metadata.namespace;
    const referenced = [
      ...[...(template.spec.containers ?? []), ...(template.spec.initContainers ?? [])].flatMap((c) =>
        (c.envFrom ?? []).flatMap((e) => (e.configMapRef ? [e.configMapRef.name] : [])),
      ),
      ...(template.spec.volumes ?? []).flatMap((v) => (v.configMap ? [v.configMap.name] : [])),
    ];
    for (const name of referenced) {
      if (!configMaps.has(key(namespace, name))) problem(`uses ConfigMap ${name}, which is not rendered`);
    }
  }
  return problems;
}

async function main(paths: string[]): Promise<number> {
  if (paths.length === 0) {
    console.error('usage: node --import tsx scripts/validate-manifests.ts FILE... (- for standard input)');
    return 2;
  }
  let failed = false;
  for (const path of paths) {
    const text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
    let objects: ManifestObject[];
    try {
      objects = parseManifests(text, path);
    } catch (error) {
      console.error((error as Error).message);
      failed = true;
      continue;
    }
    const problems = await validateManifests(objects);
    for (const { object, message } of problems) console.error(`${path}: ${object}: ${message}`);
    if (problems.length > 0 || objects.length === 0) {
      if (objects.length === 0) console.error(`${path}: no objects`);
      failed = true;
    } else {
      const kinds = new Map<string, number>();
      for (const object of objects) kinds.set(object.kind, (kinds.get(object.kind) ?? 0) + 1);
      const summary = [...kinds].map(([kind, count]) => `${count} ${kind}`).join(', ');
      console.log(`${path}: ${objects.length} objects valid (${summary})`);
    }
  }
  return failed ? 1 : 0;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
