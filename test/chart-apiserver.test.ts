// The chart against a real API server: every object of the default render (real NATS and MinIO
// subcharts included) and of values-gpu.yaml goes through server-side apply (dry run), which
// validates, defaults and admits it as a cluster would; the controller reads the owner of its
// Jobs; `helm install` then `helm upgrade` keep the generated NATS login; the installed RBAC
// gives the controller exactly what it needs; `helm uninstall` takes the trainer Jobs along
// (the garbage collector of the kube-controller-manager must run).
//
// Runs only when TRANSFERLAB_KUBECONFIG names the kubeconfig of an API server the test may
// create namespaces in (scripts/test.sh sets it once it starts a control plane); otherwise the
// suite is reported as skipped, with the reason in its name.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AuthorizationV1Api, BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import { expandGrid, parseSpec } from '@transferlab/experiment';
import { buildTrainerJob } from '@transferlab/runner/controller/kubernetes-job';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  KUBECONFIG_VARIABLE,
  ensureNamespace,
  kubeConfigFromEnv,
  serverSideApply,
} from '../scripts/server-side-apply.ts';
import { type ManifestObject, parseManifests } from '../scripts/validate-manifests.ts';
import { jobOwnerReference } from '../services/controller/src/job-owner.ts';

const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;
const kubeConfig = kubeConfigFromEnv();
const NAMESPACE = `transferlab-chart-${process.pid}`;

let out = '';
let helm = '';
const helmEnv = () => ({
  ...process.env,
  KUBECONFIG: process.env[KUBECONFIG_VARIABLE],
  HELM_CACHE_HOME: join(out, 'helm-home/cache'),
  HELM_CONFIG_HOME: join(out, 'helm-home/config'),
  HELM_DATA_HOME: join(out, 'helm-home/data'),
});

describe.skipIf(!kubeConfig)(`the chart on a real API server (${KUBECONFIG_VARIABLE})`, () => {
  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'transferlab-chart-apiserver-'));
    // The chart copy with its real subcharts, and its renders.
    await run('bash', [join(REPO, 'scripts/helm-check.sh'), out], {
      cwd: REPO,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, [KUBECONFIG_VARIABLE]: '' },
    });
    helm = (await run('bash', [join(REPO, 'scripts/helm-get.sh')], { cwd: REPO })).stdout.trim();
    await ensureNamespace(kubeConfig!, NAMESPACE);
  }, 300_000);

  afterAll(async () => {
    if (!kubeConfig) return;
    await run(helm, ['uninstall', 'transferlab', '--namespace', NAMESPACE], { env: helmEnv() }).catch(() => undefined);
    await kubeConfig
      .makeApiClient(CoreV1Api)
      .deleteNamespace({ name: NAMESPACE })
      .catch(() => undefined);
    if (out) await rm(out, { recursive: true, force: true });
  });

  const rendered = async (file: string): Promise<ManifestObject[]> =>
    parseManifests(await readFile(join(out, 'rendered', file), 'utf8'), file).map((object) => ({
      ...object,
      metadata: { ...object.metadata, namespace: NAMESPACE },
    }));

  it('accepts every object of the default render and of values-gpu.yaml (server-side apply, dry run)', async () => {
    for (const file of ['default-values.yaml', 'values-gpu.yaml']) {
      const objects = await rendered(file);
      expect(objects.length, file).toBeGreaterThan(20);
      expect(await serverSideApply(objects, { kubeConfig: kubeConfig!, namespace: NAMESPACE }), file).toEqual({
        problems: [],
        unserved: [],
      });
    }
  }, 120_000);

  it('refuses what a cluster would refuse, naming the object', async () => {
    const [deployment] = (await rendered('default-values.yaml')).filter((o) => o.kind === 'Deployment');
    // Within the type (kubernetes-models lets it pass), refused by the server's validation.
    (deployment!.spec as { replicas: number }).replicas = -1;
    const { problems } = await serverSideApply([deployment!], { kubeConfig: kubeConfig!, namespace: NAMESPACE });
    expect(problems).toHaveLength(1);
    expect(problems[0]!.object).toBe(`Deployment/${deployment!.metadata.name}`);
    expect(problems[0]!.message).toMatch(/^422 Invalid: .*spec\.replicas/);
  });

  it('gives the controller the owner of its Jobs, and names the ConfigMap when it is missing', async () => {
    const core = kubeConfig!.makeApiClient(CoreV1Api);
    const created = await core.createNamespacedConfigMap({
      namespace: NAMESPACE,
      body: { metadata: { name: 'owner-check' }, data: { purpose: 'test' } },
    });
    expect(await jobOwnerReference(kubeConfig!, NAMESPACE, 'owner-check')).toEqual({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      name: 'owner-check',
      uid: created.metadata!.uid,
    });
    await expect(jobOwnerReference(kubeConfig!, NAMESPACE, 'no-such-owner')).rejects.toThrow(
      new RegExp(`ConfigMap ${NAMESPACE}/no-such-owner, the owner of the trainer Jobs .*404`),
    );
  });

  it('installs with defaults, and an upgrade keeps the generated NATS login, TLS certificate and API token', async () => {
    const chart = join(out, 'chart');
    const install = ['install', 'transferlab', chart, '--namespace', NAMESPACE];
    await run(helm, install, { env: helmEnv(), maxBuffer: 16 * 1024 * 1024 });
    const core = kubeConfig!.makeApiClient(CoreV1Api);
    const generated = async () =>
      Object.fromEntries(
        await Promise.all(
          ['transferlab-nats-auth', 'transferlab-tls', 'transferlab-api-token'].map(async (name) => [
            name,
            (await core.readNamespacedSecret({ name, namespace: NAMESPACE })).data,
          ]),
        ),
      ) as Record<string, Record<string, string> | undefined>;
    const first = await generated();
    expect(first['transferlab-nats-auth']?.password).toBeTruthy();
    expect(Object.keys(first['transferlab-tls'] ?? {}).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(first['transferlab-api-token']?.token).toBeTruthy();
    await run(helm, ['upgrade', 'transferlab', chart, '--namespace', NAMESPACE, '--set', 'logLevel=debug'], {
      env: helmEnv(),
      maxBuffer: 16 * 1024 * 1024,
    });
    expect(await generated()).toEqual(first);
  }, 120_000);

  it("gives the controller's ServiceAccount exactly what it needs, and the trainers' none (RBAC as installed)", async () => {
    // After the install above: SubjectAccessReviews ask the server's RBAC authorizer about the
    // installed Role and binding.
    const authorization = kubeConfig!.makeApiClient(AuthorizationV1Api);
    const can = async (
      account: string,
      attributes: {
        verb: string;
        resource: string;
        group?: string;
        name?: string;
        subresource?: string;
        namespace?: string;
      },
    ) =>
      (
        await authorization.createSubjectAccessReview({
          body: {
            spec: {
              user: `system:serviceaccount:${NAMESPACE}:${account}`,
              groups: ['system:serviceaccounts', `system:serviceaccounts:${NAMESPACE}`],
              resourceAttributes: { namespace: NAMESPACE, ...attributes },
            },
          },
        })
      ).status?.allowed ?? false;
    const controller = 'transferlab-controller';
    for (const verb of ['create', 'get', 'list', 'watch', 'delete']) {
      expect(await can(controller, { verb, resource: 'jobs', group: 'batch' }), `jobs ${verb}`).toBe(true);
    }
    expect(await can(controller, { verb: 'watch', resource: 'pods' })).toBe(true);
    expect(await can(controller, { verb: 'get', resource: 'pods', subresource: 'log' })).toBe(true);
    expect(await can(controller, { verb: 'watch', resource: 'events' })).toBe(true);
    expect(await can(controller, { verb: 'list', resource: 'events', group: 'events.k8s.io' })).toBe(true);
    expect(await can(controller, { verb: 'get', resource: 'configmaps', name: 'transferlab-trainer-jobs' })).toBe(true);
    // Nothing more: no other ConfigMap, no Secret, no pods of its own, nothing elsewhere.
    expect(await can(controller, { verb: 'get', resource: 'configmaps', name: 'transferlab-config' })).toBe(false);
    expect(await can(controller, { verb: 'list', resource: 'configmaps' })).toBe(false);
    expect(await can(controller, { verb: 'get', resource: 'secrets', name: 'transferlab-nats-auth' })).toBe(false);
    expect(await can(controller, { verb: 'create', resource: 'pods' })).toBe(false);
    expect(await can(controller, { verb: 'update', resource: 'jobs', group: 'batch' })).toBe(false);
    expect(await can(controller, { verb: 'create', resource: 'jobs', group: 'batch', namespace: 'default' })).toBe(
      false,
    );
    expect(await can('transferlab-trainer', { verb: 'get', resource: 'pods' })).toBe(false);
    expect(await can('transferlab-trainer', { verb: 'get', resource: 'secrets', name: 'transferlab-minio' })).toBe(
      false,
    );
  });
  it('keeps a queued Job suspended, and takes the trainer Jobs along on `helm uninstall` (owner reference, garbage collector)', async () => {
    // After the install above: a Job as the controller builds it, owned by the release's ConfigMap.
    const owner = await jobOwnerReference(kubeConfig!, NAMESPACE, 'transferlab-trainer-jobs');
    const [cell] = expandGrid(
      parseSpec('name: gc\ndataset: { kind: mnist }\nnet: { kind: small }\nlayers: [1]\narms: [baseB]\n', 'gc.yaml'),
    ).cells;
    const job = buildTrainerJob(cell!, {
      sweepId: 'gc-0123abcd',
      attempt: 1,
      settings: {
        namespace: NAMESPACE,
        instance: 'transferlab',
        image: 'transferlab-trainer-gpu:0.1.0',
        gpus: 0,
        configMapName: 'transferlab-config',
        ownerReferences: [owner],
        // As with kueue.queueName set: queued, created suspended (Kueue's webhook is not here).
        labels: { 'kueue.x-k8s.io/queue-name': 'gpu-queue' },
        suspend: true,
      },
    });
    const batch = kubeConfig!.makeApiClient(BatchV1Api);
    const created = await batch.createNamespacedJob({ namespace: NAMESPACE, body: job });
    expect(created.spec?.suspend).toBe(true);
    expect(created.metadata?.labels?.['kueue.x-k8s.io/queue-name']).toBe('gpu-queue');
    // The Job controller starts no pod for a suspended Job: it waits for its queue.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const pods = await kubeConfig!
      .makeApiClient(CoreV1Api)
      .listNamespacedPod({ namespace: NAMESPACE, labelSelector: `batch.kubernetes.io/job-name=${job.metadata!.name}` });
    expect(pods.items).toEqual([]);
    await run(helm, ['uninstall', 'transferlab', '--namespace', NAMESPACE], { env: helmEnv() });
    const name = job.metadata!.name!;
    const until = Date.now() + 60_000;
    for (;;) {
      const gone = await batch.readNamespacedJob({ name, namespace: NAMESPACE }).then(
        (found) => found.metadata?.deletionTimestamp !== undefined,
        (error: unknown) => {
          if ((error as { code?: number }).code === 404) return true;
          throw error;
        },
      );
      if (gone) break;
      if (Date.now() > until) throw new Error(`Job ${name} is still there 60 s after helm uninstall`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }, 120_000);
});
