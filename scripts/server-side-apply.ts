// Sends rendered manifests to a real API server as a server-side apply, dry run by default:
// validation, defaulting, admission and RBAC of the server itself, which kubernetes-models
// (scripts/validate-manifests.ts) cannot give (unknown fields, immutable fields, quota, webhooks).
//
//   TRANSFERLAB_KUBECONFIG=FILE node --import tsx scripts/server-side-apply.ts [--namespace NS] FILE...
//
// The kubeconfig comes from TRANSFERLAB_KUBECONFIG only, never from KUBECONFIG or ~/.kube/config:
// a check must not reach whatever cluster the developer's shell points at. scripts/helm-check.sh
// runs it on every render when the variable is set. Exit code 1 when any object is refused.
import { pathToFileURL } from 'node:url';
import { readFile } from 'node:fs/promises';
import {
  ApiException,
  ApisApi,
  CoreV1Api,
  KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
} from '@kubernetes/client-node';
import { type ManifestObject, type ManifestProblem, objectName, parseManifests } from './validate-manifests.ts';

/** The variable naming the kubeconfig of the API server to check against. */
export const KUBECONFIG_VARIABLE = 'TRANSFERLAB_KUBECONFIG';

/** Kinds that live outside namespaces; every other object gets the target namespace when it has none. */
const CLUSTER_SCOPED = new Set([
  'Namespace',
  'Node',
  'PersistentVolume',
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
  'PriorityClass',
  'StorageClass',
  'RuntimeClass',
  'IngressClass',
  'ValidatingWebhookConfiguration',
  'MutatingWebhookConfiguration',
  'APIService',
]);

/** The kubeconfig named by TRANSFERLAB_KUBECONFIG, or undefined when it is not set. */
export function kubeConfigFromEnv(env: NodeJS.ProcessEnv = process.env): KubeConfig | undefined {
  const file = env[KUBECONFIG_VARIABLE];
  if (!file) return undefined;
  const config = new KubeConfig();
  config.loadFromFile(file);
  return config;
}

export interface ServerSideApplyOptions {
  kubeConfig: KubeConfig;
  /** Where objects without a namespace go (helm leaves it out of some subchart objects). */
  namespace: string;
  /** Default true: the server checks everything and stores nothing. */
  dryRun?: boolean;
  /** Default 'transferlab-chart-check'. */
  fieldManager?: string;
  /** Create the namespace (for real) when it does not exist: a dry run into a missing namespace is refused. */
  createNamespace?: boolean;
}

/** The reason the API server gave, without the request body (which may hold secrets). */
function refusal(error: unknown): string {
  if (error instanceof ApiException) {
    const body = error.body as unknown;
    let parsed: { message?: string; reason?: string } | undefined;
    try {
      parsed = (typeof body === 'string' ? JSON.parse(body) : body) as typeof parsed;
    } catch {
      parsed = undefined;
    }
    return `${error.code}${parsed?.reason ? ` ${parsed.reason}` : ''}: ${parsed?.message ?? 'no message'}`;
  }
  return (error as Error).message.split('\n')[0] ?? String(error);
}

/**
 * Creates the namespace when missing, then waits (up to 30 s) for its `default` ServiceAccount:
 * admission refuses pods, dry run or not, until the controller manager has made it.
 */
export async function ensureNamespace(kubeConfig: KubeConfig, name: string): Promise<void> {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  try {
    await core.readNamespace({ name });
  } catch (error) {
    if (!(error instanceof ApiException) || error.code !== 404) throw error;
    await core.createNamespace({ body: { metadata: { name } } });
  }
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    const found = await core.readNamespacedServiceAccount({ name: 'default', namespace: name }).then(
      () => true,
      () => false,
    );
    if (found) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export interface ServerSideApplyResult {
  /** What the server refused, one problem per object; none: it took every object it serves. */
  problems: ManifestProblem[];
  /**
   * `Kind/name` of objects whose API group and version the server does not serve (a custom
   * resource whose CRD is not installed, e.g. the Prometheus Operator's): nothing checked them.
   */
  unserved: string[];
}

/** The group/versions the server serves (`v1` for the core group). */
async function servedVersions(kubeConfig: KubeConfig): Promise<Set<string>> {
  const { groups } = await kubeConfig.makeApiClient(ApisApi).getAPIVersions();
  return new Set(['v1', ...groups.flatMap((group) => group.versions.map((version) => version.groupVersion))]);
}

/** Applies every object server-side (dry run unless told otherwise); see ServerSideApplyResult. */
export async function serverSideApply(
  objects: ManifestObject[],
  options: ServerSideApplyOptions,
): Promise<ServerSideApplyResult> {
  const namespaceOf = (object: ManifestObject): string | undefined =>
    CLUSTER_SCOPED.has(object.kind) ? undefined : (object.metadata.namespace ?? options.namespace);
  if (options.createNamespace) {
    // Objects may name namespaces of their own (dashboards for Grafana's, monitors for Prometheus').
    const namespaces = new Set([options.namespace, ...objects.flatMap((object) => namespaceOf(object) ?? [])]);
    for (const namespace of namespaces) await ensureNamespace(options.kubeConfig, namespace);
  }
  const served = await servedVersions(options.kubeConfig);
  const client = KubernetesObjectApi.makeApiClient(options.kubeConfig);
  const problems: ManifestProblem[] = [];
  const unserved: string[] = [];
  for (const object of objects) {
    if (!served.has(object.apiVersion)) {
      unserved.push(objectName(object));
      continue;
    }
    const body = structuredClone(object) as KubernetesObject & ManifestObject;
    const namespace = namespaceOf(body);
    if (namespace) body.metadata.namespace = namespace;
    try {
      await client.patch(
        body,
        undefined,
        options.dryRun === false ? undefined : 'All',
        options.fieldManager ?? 'transferlab-chart-check',
        true,
        PatchStrategy.ServerSideApply,
      );
    } catch (error) {
      problems.push({ object: objectName(object), message: refusal(error) });
    }
  }
  return { problems, unserved };
}

async function main(args: string[]): Promise<number> {
  let namespace = 'default';
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--namespace') namespace = args[++i] ?? namespace;
    else files.push(args[i]!);
  }
  const kubeConfig = kubeConfigFromEnv();
  if (!kubeConfig || files.length === 0) {
    console.error(
      `usage: ${KUBECONFIG_VARIABLE}=FILE node --import tsx scripts/server-side-apply.ts [--namespace NS] FILE...`,
    );
    return 2;
  }
  let failed = false;
  for (const file of files) {
    const objects = parseManifests(await readFile(file, 'utf8'), file);
    const { problems, unserved } = await serverSideApply(objects, { kubeConfig, namespace, createNamespace: true });
    for (const { object, message } of problems) {
      console.error(`${file}: ${object}: the API server refused it: ${message}`);
    }
    if (unserved.length > 0) {
      console.log(`${file}: not checked, the server does not serve their API (no CRD): ${unserved.join(', ')}`);
    }
    if (problems.length > 0) failed = true;
    else {
      const accepted = objects.length - unserved.length;
      console.log(`${file}: ${accepted} objects accepted by the API server (server-side apply, dry run)`);
    }
  }
  return failed ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
