// The real Kubernetes control plane the cluster tests run against (scripts/kube-start.sh: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback). scripts/test.sh
// starts it once and exports TRANSFERLAB_KUBECONFIG and TRANSFERLAB_KUBE_ETCD_URL; a test file
// run on its own starts its own through the same scripts (building it first when it is not
// cached: tens of minutes the first time). Nothing here is skipped: without a control plane the
// tests fail, naming what is missing.
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  type V1Namespace,
} from '@kubernetes/client-node';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { REPO } from './servers.ts';

const run = promisify(execFile);

export interface ControlPlane {
  /** cluster-admin (system:masters): for the tests' set-up only. */
  admin: KubeConfig;
  /** etcd's client URL: for forcing compactions. */
  etcdUrl: string;
  /** The API server's audit log of every request a ServiceAccount made (JSON lines). */
  auditLog: string;
  stop(): Promise<void>;
}

/** The control plane from scripts/test.sh's environment, or one started here (and stopped by `stop`). */
export async function controlPlane(): Promise<ControlPlane> {
  let env: Record<string, string | undefined> = process.env;
  let stop = async (): Promise<void> => {};
  if (!process.env.TRANSFERLAB_KUBECONFIG) {
    const dir = await mkdtemp(join(tmpdir(), 'tl-kube-'));
    let stdout: string;
    try {
      ({ stdout } = await run('bash', [join(REPO, 'scripts/kube-start.sh'), dir], {
        timeout: 90 * 60_000,
        maxBuffer: 1 << 24,
      }));
    } catch (error) {
      const stderr = String((error as { stderr?: string }).stderr ?? '').slice(-4000);
      throw new Error(`scripts/kube-start.sh ${dir} failed (no TRANSFERLAB_KUBECONFIG was set):\n${stderr}`);
    }
    env = {};
    for (const match of stdout.matchAll(/^(TRANSFERLAB_[A-Z0-9_]+)=(.*)$/gm)) env[match[1]!] = match[2]!;
    stop = async () => {
      await run('bash', [join(REPO, 'scripts/kube-stop.sh'), dir]);
      await rm(dir, { recursive: true, force: true });
    };
  }
  const kubeconfigPath = env.TRANSFERLAB_KUBECONFIG;
  const etcdUrl = env.TRANSFERLAB_KUBE_ETCD_URL;
  const auditLog = env.TRANSFERLAB_KUBE_AUDIT_LOG;
  if (!kubeconfigPath || !etcdUrl || !auditLog) {
    throw new Error(
      'the control plane printed no TRANSFERLAB_KUBECONFIG, TRANSFERLAB_KUBE_ETCD_URL and TRANSFERLAB_KUBE_AUDIT_LOG',
    );
  }
  const admin = new KubeConfig();
  admin.loadFromFile(kubeconfigPath);
  return { admin, etcdUrl, auditLog, stop };
}

/**
 * A fresh namespace. `restricted`: Pod Security Admission enforces the restricted profile in it,
 * as a hardened cluster would; trainer pods must pass it.
 */
export async function createNamespace(admin: KubeConfig, prefix: string, options: { restricted?: boolean } = {}) {
  const core = admin.makeApiClient(CoreV1Api);
  const body: V1Namespace = {
    metadata: {
      generateName: `${prefix}-`,
      labels: options.restricted ? { 'pod-security.kubernetes.io/enforce': 'restricted' } : {},
    },
  };
  const namespace = (await core.createNamespace({ body })).metadata!.name!;
  // Pods name the namespace's default ServiceAccount; the controller manager adds it shortly.
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await core.readNamespacedServiceAccount({ name: 'default', namespace });
      return namespace;
    } catch (error) {
      if (!(error instanceof ApiException && error.code === 404) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * The chart's RBAC objects (templates/rbac.yaml: the controller's and the trainers'
 * ServiceAccounts, the controller's Role and RoleBinding), rendered by helm for release
 * `release` in `namespace` and created in the cluster. Returns the controller's ServiceAccount.
 */
export async function installChartRbac(admin: KubeConfig, namespace: string, release = 'transferlab') {
  const objects = await renderChart(release, namespace, 'templates/rbac.yaml');
  const client = KubernetesObjectApi.makeApiClient(admin);
  for (const object of objects) await client.create(object);
  const account = objects.find(
    (object) => object.kind === 'ServiceAccount' && object.metadata?.name?.endsWith('-controller'),
  );
  if (!account) throw new Error("the chart's rbac.yaml rendered no controller ServiceAccount");
  return account.metadata!.name!;
}

/** Renders one template of charts/transferlab with its CI default values (helm from scripts/helm-get.sh). */
export async function renderChart(release: string, namespace: string, template: string): Promise<KubernetesObject[]> {
  const { stdout: helmPath } = await run('bash', [join(REPO, 'scripts/helm-get.sh')]);
  const work = await mkdtemp(join(tmpdir(), 'tl-chart-'));
  try {
    // helm refuses to render a chart whose dependencies are not downloaded, even for one
    // template that does not use them; the copy drops them (they are off in these values).
    const chart = join(work, 'chart');
    await cp(join(REPO, 'charts/transferlab'), chart, { recursive: true });
    await rm(join(chart, 'charts'), { recursive: true, force: true });
    await rm(join(chart, 'Chart.lock'), { force: true });
    const meta = parse(await readFile(join(chart, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
    delete meta.dependencies;
    await writeFile(join(chart, 'Chart.yaml'), stringify(meta));
    const { stdout } = await run(
      helmPath.trim(),
      [
        'template',
        release,
        chart,
        '--namespace',
        namespace,
        '--values',
        join(REPO, 'charts/transferlab/ci/default-values.yaml'),
        '--show-only',
        template,
      ],
      {
        env: {
          ...process.env,
          HELM_CACHE_HOME: join(work, 'cache'),
          HELM_CONFIG_HOME: join(work, 'config'),
          HELM_DATA_HOME: join(work, 'data'),
        },
      },
    );
    return parseAllDocuments(stdout)
      .map((document) => document.toJS() as KubernetesObject | null)
      .filter((object): object is KubernetesObject => object !== null);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Credentials of a ServiceAccount: a token the API server issues for it (TokenRequest), as a pod would mount. */
export async function serviceAccountKubeConfig(
  admin: KubeConfig,
  namespace: string,
  serviceAccount: string,
): Promise<KubeConfig> {
  const core = admin.makeApiClient(CoreV1Api);
  const request = await core.createNamespacedServiceAccountToken({
    name: serviceAccount,
    namespace,
    body: { spec: { audiences: [], expirationSeconds: 3600 } },
  });
  const cluster = admin.getCurrentCluster()!;
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [cluster],
    users: [{ name: serviceAccount, token: request.status!.token }],
    contexts: [{ name: 'sa', cluster: cluster.name, user: serviceAccount, namespace }],
    currentContext: 'sa',
  });
  return config;
}

/**
 * Compacts etcd's history, as the API server does every few minutes: a watch that resumes from a
 * resourceVersion older than the newest write before this call gets "410 Gone" from then on.
 * Writes a scratch key outside the API server's prefix and compacts up to that write (a
 * compaction keeps the revision it is given, so the last API write before it is gone from the
 * history only with one more write after it). Through etcd's JSON gateway: no etcdctl needed.
 * Returns the revision compacted to.
 */
export async function compactEtcd(etcdUrl: string): Promise<number> {
  const post = async (path: string, body: unknown): Promise<{ header?: { revision?: string } }> => {
    const response = await fetch(`${etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`etcd ${path}: HTTP ${response.status} ${await response.text()}`);
    return (await response.json()) as { header?: { revision?: string } };
  };
  const base64 = (text: string) => Buffer.from(text).toString('base64');
  const put = await post('/v3/kv/put', {
    key: base64('/transferlab-test/compaction'),
    value: base64(String(Date.now())),
  });
  const revision = Number(put.header?.revision);
  if (!Number.isFinite(revision) || revision < 1) throw new Error('etcd reported no revision');
  await post('/v3/kv/compaction', { revision: String(revision), physical: true });
  return revision;
}
