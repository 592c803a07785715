// The chart against a real API server: every object of the default render (real NATS and MinIO
// subcharts included) and of values-gpu.yaml goes through server-side apply (dry run), which
// validates, defaults and admits it as a cluster would; the controller reads the owner of its
// Jobs; and `helm install` then `helm upgrade` keep the generated NATS login.
//
// Runs only when TRANSFERLAB_KUBECONFIG names the kubeconfig of an API server the test may
// create namespaces in (scripts/test.sh sets it once it starts a control plane); otherwise the
// suite is reported as skipped, with the reason in its name.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api } from '@kubernetes/client-node';
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

  it('installs with defaults, and an upgrade keeps the generated NATS login', async () => {
    const chart = join(out, 'chart');
    const install = ['install', 'transferlab', chart, '--namespace', NAMESPACE];
    await run(helm, install, { env: helmEnv(), maxBuffer: 16 * 1024 * 1024 });
    const core = kubeConfig!.makeApiClient(CoreV1Api);
    const password = async () =>
      (await core.readNamespacedSecret({ name: 'transferlab-nats-auth', namespace: NAMESPACE })).data?.password;
    const first = await password();
    expect(first).toBeTruthy();
    await run(helm, ['upgrade', 'transferlab', chart, '--namespace', NAMESPACE, '--set', 'logLevel=debug'], {
      env: helmEnv(),
      maxBuffer: 16 * 1024 * 1024,
    });
    expect(await password()).toBe(first);
  }, 120_000);
});
