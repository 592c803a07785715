// The Helm chart, checked offline with its real subcharts: `scripts/helm-check.sh` (helm lint
// --strict and helm template with every values file in charts/transferlab/ci/ and
// values-*.yaml, each render validated with kubernetes-models), then what matters about the
// rendered objects: RBAC, security contexts, secrets, probes, the trainer Job settings, the values
// schema, monitoring, NetworkPolicies, the `helm test` hook and the bundled NATS and MinIO. The
// packaged upstream NATS and MinIO charts come from TRANSFERLAB_SUBCHARTS_DIR (default
// ../shared/charts): without them this test fails, it never falls back to stubs. No cluster is
// involved (test/chart-apiserver.test.ts takes the chart to a real API server).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { expandGrid, parseSpec } from '@transferlab/experiment';
import {
  clientSecurityFromEnv,
  createLogger,
  healthStatus,
  loadConfig,
  openBus,
  serverSecurityFromEnv,
  startGrpcServer,
} from '@transferlab/platform';
import { buildTrainerJob } from '@transferlab/runner/controller/kubernetes-job';
import { parseTargets } from '../deploy/helm-test.ts';
import { type ManifestObject, parseManifests, validateManifests } from '../scripts/validate-manifests.ts';
import { controllerConfig, trainerJobSettings } from '../services/controller/src/config.ts';
import { startConfiguredNats } from './support/servers.ts';

const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;
const CHART = join(REPO, 'charts/transferlab');
const CI_FILES = [
  'default-values.yaml',
  'external-values.yaml',
  'gpu-values.yaml',
  'keys-in-values.yaml',
  'monitoring-values.yaml',
  'values-gpu.yaml',
];
/** Renders with the bundled NATS and MinIO (the chart's defaults). */
const BUNDLED = ['default-values.yaml', 'values-gpu.yaml'];
const SERVICES = ['controller', 'dataset-splitter', 'transplanter', 'evaluator'] as const;
const PORTS: Record<(typeof SERVICES)[number], number> = {
  controller: 50060,
  'dataset-splitter': 50061,
  transplanter: 50062,
  evaluator: 50063,
};
const RELEASE = 'transferlab';
const HEALTH_PORT = 50070;
const SUBCHARTS = process.env.TRANSFERLAB_SUBCHARTS_DIR ?? join(REPO, '../shared/charts');
const NAMESPACE = 'transferlab';

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string };
    configMapKeyRef?: { name: string; key: string };
    fieldRef?: { fieldPath: string };
  };
}
interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: unknown;
  tcpSocket?: unknown;
  exec?: unknown;
}
interface Container {
  name: string;
  args?: string[];
  ports?: { name: string; containerPort: number }[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string }[];
}
interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: Record<string, unknown>;
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; emptyDir?: object; secret?: { secretName: string; items?: { key: string }[] } }[];
}

let out: string;
let helm: string;
let checkOutput = '';
let checkStatus = 0;
const renders = new Map<string, ManifestObject[]>();

const helmEnv = () => ({
  ...process.env,
  HELM_CACHE_HOME: join(out, 'helm-home/cache'),
  HELM_CONFIG_HOME: join(out, 'helm-home/config'),
  HELM_DATA_HOME: join(out, 'helm-home/data'),
});

/** `helm template` on the chart copy with its subcharts; values files are written from `values` (YAML text). */
async function template(values: string[], extraArgs: string[] = []): Promise<ManifestObject[]> {
  const args = ['template', RELEASE, join(out, 'chart'), '--namespace', NAMESPACE, ...extraArgs];
  for (const [index, text] of values.entries()) {
    const file = join(out, `values-${Date.now()}-${index}.yaml`);
    await writeFile(file, text);
    args.push('-f', file);
  }
  const { stdout } = await run(helm, args, { env: helmEnv(), maxBuffer: 64 * 1024 * 1024 });
  return parseManifests(stdout, 'helm template');
}

/** The error helm prints when it refuses values. */
async function templateError(values: string): Promise<string> {
  try {
    await template([values]);
  } catch (error) {
    return String((error as { stderr?: string }).stderr ?? error);
  }
  throw new Error('helm template accepted the values');
}

const byKind = (objects: ManifestObject[], kind: string) => objects.filter((o) => o.kind === kind);
/** Objects of this chart, not of its subcharts. */
const ours = (objects: ManifestObject[]) =>
  objects.filter((o) => o.metadata.labels?.['app.kubernetes.io/part-of'] === 'transferlab');
const named = (objects: ManifestObject[], kind: string, name: string): ManifestObject => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind}/${name} among ${objects.map((o) => `${o.kind}/${o.metadata.name}`)}`);
  return found;
};
const podSpec = (object: ManifestObject): PodSpec => (object.spec as { template: { spec: PodSpec } }).template.spec;
const containerOf = (objects: ManifestObject[], service: string): Container =>
  podSpec(named(objects, 'Deployment', `${RELEASE}-${service}`)).containers[0]!;
const env = (container: Container, name: string): EnvVar | undefined =>
  container.env?.find((variable) => variable.name === name);
const envValue = (container: Container, name: string): string => {
  const variable = env(container, name);
  if (variable?.value === undefined) throw new Error(`${container.name} has no plain env ${name}`);
  return variable.value;
};
const render = (file: string): ManifestObject[] => {
  const objects = renders.get(file);
  if (!objects) throw new Error(`no render of ${file}`);
  return objects;
};

beforeAll(async () => {
  if (!existsSync(join(SUBCHARTS, 'SHA256SUMS'))) {
    throw new Error(
      `the packaged NATS and MinIO charts are not at ${SUBCHARTS} (set TRANSFERLAB_SUBCHARTS_DIR): the chart cannot be checked without them`,
    );
  }
  out = await mkdtemp(join(tmpdir(), 'transferlab-helm-test-'));
  try {
    const { stdout, stderr } = await run('bash', [join(REPO, 'scripts/helm-check.sh'), out], {
      cwd: REPO,
      maxBuffer: 64 * 1024 * 1024,
    });
    checkOutput = stdout + stderr;
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; code?: number };
    checkOutput = `${failed.stdout ?? ''}${failed.stderr ?? ''}`;
    checkStatus = failed.code ?? 1;
  }
  helm = (await run('bash', [join(REPO, 'scripts/helm-get.sh')], { cwd: REPO })).stdout.trim();
  for (const file of await readdir(join(out, 'rendered'))) {
    renders.set(file, parseManifests(await readFile(join(out, 'rendered', file), 'utf8'), file));
  }
});

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

describe('helm-check.sh', () => {
  it('lints (--strict), renders and validates the chart with every CI values file', () => {
    expect(checkOutput, checkOutput).toContain(`helm-check: ok (${CI_FILES.length} values files)`);
    expect(checkStatus).toBe(0);
    expect([...renders.keys()].sort()).toEqual([...CI_FILES].sort());
  });

  it('validates every rendered object with kubernetes-models, here too', async () => {
    for (const [file, objects] of renders) {
      expect(objects.length, file).toBeGreaterThan(10);
      expect(await validateManifests(objects), file).toEqual([]);
    }
  });

  it('has a validator that does find faults', async () => {
    const objects = structuredClone(render('default-values.yaml'));
    const deployment = named(objects, 'Deployment', `${RELEASE}-evaluator`);
    const container = podSpec(deployment).containers[0] as unknown as { ports: { containerPort: unknown }[] };
    container.ports[0]!.containerPort = 'fifty';
    const service = named(objects, 'Service', `${RELEASE}-transplanter`);
    (service.spec as { ports: { targetPort: string }[] }).ports[0]!.targetPort = 'grcp';
    const problems = await validateManifests(objects);
    expect(problems.map((p) => p.object)).toEqual(
      expect.arrayContaining([`Deployment/${RELEASE}-evaluator`, `Service/${RELEASE}-transplanter`]),
    );
    expect(problems.map((p) => p.message).join('\n')).toMatch(/containerPort must be integer/);
    expect(problems.map((p) => p.message).join('\n')).toMatch(/targetPort 'grcp'/);
  });

  it('renders the real NATS and MinIO charts at the pinned versions, never stubs', async () => {
    const chart = parseYaml(await readFile(join(CHART, 'Chart.yaml'), 'utf8')) as {
      dependencies: { name: string; version: string; condition: string }[];
    };
    expect(chart.dependencies.map((d) => `${d.name}-${d.version}`)).toEqual(['nats-1.3.16', 'minio-5.4.0']);
    expect((await readdir(join(out, 'chart', 'charts'))).sort()).toEqual(['minio-5.4.0.tgz', 'nats-1.3.16.tgz']);
    for (const file of BUNDLED) {
      const objects = render(file);
      expect(
        objects.filter((o) => o.metadata.name.endsWith('-stub')),
        file,
      ).toEqual([]);
      const nats = podSpec(named(objects, 'StatefulSet', `${RELEASE}-nats`)).containers.find((c) => c.name === 'nats');
      expect((nats as unknown as { image: string }).image, file).toBe('nats:2.11.10-alpine');
      const minio = podSpec(named(objects, 'Deployment', `${RELEASE}-minio`)).containers[0] as unknown as {
        image: string;
      };
      expect(minio.image, file).toMatch(/^quay\.io\/minio\/minio:RELEASE\./);
    }
  });

  it('fails loudly when the packaged subcharts are missing or altered', async () => {
    const attempt = async (dir: string) =>
      run('bash', [join(REPO, 'scripts/helm-check.sh'), join(out, 'check-missing')], {
        cwd: REPO,
        env: { ...process.env, TRANSFERLAB_SUBCHARTS_DIR: dir },
      }).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code?: number; stderr?: string }) => ({ code: error.code, stderr: error.stderr ?? '' }),
      );
    const missing = await attempt(join(out, 'no-such-folder'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no subchart folder at .*no-such-folder \(set TRANSFERLAB_SUBCHARTS_DIR/);
    // A copy whose NATS package differs from its digest.
    const altered = join(out, 'altered-subcharts');
    await mkdir(altered, { recursive: true });
    for (const file of ['SHA256SUMS', 'minio-5.4.0.tgz']) await copyFile(join(SUBCHARTS, file), join(altered, file));
    await writeFile(join(altered, 'nats-1.3.16.tgz'), 'not the NATS chart');
    const tampered = await attempt(altered);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/do not match their SHA256SUMS/);
  });
});

describe('the rendered chart', () => {
  it('has a Deployment and a Service per service, on its port, reachable by the controller', () => {
    for (const [file, objects] of renders) {
      for (const service of SERVICES) {
        const container = containerOf(objects, service);
        expect(container.args, file).toEqual([`services/${service}/src/main.ts`]);
        expect(container.ports, file).toEqual(
          expect.arrayContaining([
            { name: 'grpc', containerPort: PORTS[service], protocol: 'TCP' },
            { name: 'metrics', containerPort: 9464, protocol: 'TCP' },
          ]),
        );
        expect(envValue(container, 'TRANSFERLAB_PORT')).toBe(String(PORTS[service]));
        expect(envValue(container, 'TRANSFERLAB_HOST')).toBe('0.0.0.0');
        expect(container.envFrom).toEqual([{ configMapRef: { name: `${RELEASE}-config` } }]);
        const svc = named(objects, 'Service', `${RELEASE}-${service}`);
        expect((svc.spec as { ports: { name: string; port: number }[] }).ports.map((p) => [p.name, p.port])).toEqual([
          ['grpc', PORTS[service]],
          ['metrics', 9464],
        ]);
      }
      const controller = containerOf(objects, 'controller');
      expect(envValue(controller, 'TRANSFERLAB_SPLITTER_ADDR')).toBe(`${RELEASE}-dataset-splitter:50061`);
      expect(envValue(controller, 'TRANSFERLAB_TRANSPLANTER_ADDR')).toBe(`${RELEASE}-transplanter:50062`);
      expect(envValue(controller, 'TRANSFERLAB_EVALUATOR_ADDR')).toBe(`${RELEASE}-evaluator:50063`);
      const strategy = (named(objects, 'Deployment', `${RELEASE}-controller`).spec as { strategy: { type: string } })
        .strategy;
      expect(strategy.type, 'one controller at a time').toBe('Recreate');
    }
  });

  it('gives the controller a namespaced Role with exactly the verbs it needs, and nothing cluster-wide', () => {
    for (const [file, objects] of renders) {
      expect(byKind(objects, 'ClusterRole'), file).toEqual([]);
      expect(byKind(objects, 'ClusterRoleBinding'), file).toEqual([]);
      const roles = byKind(objects, 'Role');
      expect(roles.map((r) => r.metadata.name)).toEqual([`${RELEASE}-controller`]);
      expect(roles[0]!.metadata.namespace).toBe(NAMESPACE);
      expect(roles[0]!.rules).toEqual([
        { apiGroups: ['batch'], resources: ['jobs'], verbs: ['create', 'get', 'list', 'watch', 'delete'] },
        { apiGroups: [''], resources: ['pods', 'pods/log'], verbs: ['get', 'list', 'watch'] },
        // FailedCreate (quota, admission) and the scheduler's reasons.
        { apiGroups: ['', 'events.k8s.io'], resources: ['events'], verbs: ['get', 'list', 'watch'] },
        // Only the ConfigMap that owns the trainer Jobs, and only to read its uid.
        { apiGroups: [''], resources: ['configmaps'], resourceNames: [`${RELEASE}-trainer-jobs`], verbs: ['get'] },
      ]);
      named(objects, 'ConfigMap', `${RELEASE}-trainer-jobs`);
      const binding = named(objects, 'RoleBinding', `${RELEASE}-controller`);
      expect(binding.metadata.namespace).toBe(NAMESPACE);
      expect(binding.roleRef).toEqual({
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: `${RELEASE}-controller`,
      });
      expect(binding.subjects).toEqual([
        { kind: 'ServiceAccount', name: `${RELEASE}-controller`, namespace: NAMESPACE },
      ]);
      const controller = podSpec(named(objects, 'Deployment', `${RELEASE}-controller`));
      expect(controller.serviceAccountName).toBe(`${RELEASE}-controller`);
      for (const service of SERVICES.filter((s) => s !== 'controller')) {
        const spec = podSpec(named(objects, 'Deployment', `${RELEASE}-${service}`));
        expect(spec.serviceAccountName, `${service} runs without the controller's account`).toBeUndefined();
        expect(spec.automountServiceAccountToken).toBe(false);
      }
      const trainerAccount = named(objects, 'ServiceAccount', `${RELEASE}-trainer`);
      expect(trainerAccount.automountServiceAccountToken).toBe(false);
    }
  });

  it('runs no container as root, with a read-only root filesystem and no capabilities', () => {
    for (const [file, objects] of renders) {
      const pods = ours(objects).filter((o) => o.kind === 'Deployment' || o.kind === 'Pod');
      expect(pods.length, file).toBe(5); // four services and the `helm test` pod
      for (const deployment of pods) {
        const spec = deployment.kind === 'Pod' ? (deployment.spec as PodSpec) : podSpec(deployment);
        const where = `${file}: ${deployment.metadata.name}`;
        expect(spec.securityContext, where).toMatchObject({
          runAsNonRoot: true,
          runAsUser: 10001,
          seccompProfile: { type: 'RuntimeDefault' },
        });
        expect(spec.volumes, where).toContainEqual(
          expect.objectContaining({ name: 'tmp', emptyDir: expect.anything() }),
        );
        for (const container of [...spec.containers, ...(spec.initContainers ?? [])]) {
          const context = container.securityContext ?? {};
          expect(context, where).toMatchObject({
            runAsNonRoot: true,
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ['ALL'] },
          });
          expect(context.runAsUser ?? spec.securityContext?.runAsUser, where).not.toBe(0);
          expect(context.privileged ?? false, where).toBe(false);
          expect(context.capabilities?.add ?? [], where).toEqual([]);
          expect(container.volumeMounts, where).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
        }
      }
    }
  });

  it('takes the S3 keys and the NATS login only from Secrets, never from the ConfigMap or a plain value', () => {
    const minio = { name: `${RELEASE}-minio`, access: 'rootUser', secret: 'rootPassword' };
    const expectedSecret: Record<string, { name: string; access: string; secret: string }> = {
      'default-values.yaml': minio,
      'values-gpu.yaml': minio,
      'keys-in-values.yaml': { name: `${RELEASE}-s3`, access: 'accessKey', secret: 'secretKey' },
      'external-values.yaml': { name: 'transferlab-s3', access: 'AWS_ACCESS_KEY_ID', secret: 'AWS_SECRET_ACCESS_KEY' },
      'gpu-values.yaml': { name: 'transferlab-s3', access: 'accessKey', secret: 'secretKey' },
      'monitoring-values.yaml': { name: 'transferlab-s3', access: 'accessKey', secret: 'secretKey' },
    };
    const natsLogin: Record<string, { name: string; user: string; password: string } | undefined> = {
      'default-values.yaml': { name: `${RELEASE}-nats-auth`, user: 'user', password: 'password' },
      'values-gpu.yaml': { name: `${RELEASE}-nats-auth`, user: 'user', password: 'password' },
      'external-values.yaml': { name: 'transferlab-nats', user: 'NATS_USER', password: 'NATS_PASSWORD' },
    };
    for (const [file, objects] of renders) {
      const expected = expectedSecret[file]!;
      const configMap = named(objects, 'ConfigMap', `${RELEASE}-config`);
      const data = configMap.data as Record<string, string>;
      expect(Object.keys(data).sort(), file).toEqual(
        [
          'TRANSFERLAB_LOG_LEVEL',
          'TRANSFERLAB_METRICS_HOST',
          'TRANSFERLAB_METRICS_PORT',
          'TRANSFERLAB_NATS_URL',
          'TRANSFERLAB_S3_BUCKET',
          'TRANSFERLAB_S3_ENDPOINT',
          'TRANSFERLAB_S3_PREFIX',
          'TRANSFERLAB_S3_REGION',
          ...(file === 'external-values.yaml' ? ['OTEL_EXPORTER_OTLP_ENDPOINT'] : []),
        ].sort(),
      );
      for (const object of byKind(objects, 'ConfigMap')) {
        for (const key of Object.keys((object.data as object | undefined) ?? {})) {
          expect(key, `${file}: ConfigMap ${object.metadata.name}`).not.toMatch(/ACCESS_KEY|SECRET|PASSWORD|TOKEN/);
        }
      }
      for (const deployment of ours(objects).filter((o) => o.kind === 'Deployment' || o.kind === 'Pod')) {
        const container = (deployment.kind === 'Pod' ? (deployment.spec as PodSpec) : podSpec(deployment))
          .containers[0]!;
        const login = natsLogin[file];
        expect(env(container, 'TRANSFERLAB_NATS_USER'), file).toEqual(
          login && {
            name: 'TRANSFERLAB_NATS_USER',
            valueFrom: { secretKeyRef: { name: login.name, key: login.user } },
          },
        );
        expect(env(container, 'TRANSFERLAB_NATS_PASSWORD'), file).toEqual(
          login && {
            name: 'TRANSFERLAB_NATS_PASSWORD',
            valueFrom: { secretKeyRef: { name: login.name, key: login.password } },
          },
        );
        expect(env(container, 'TRANSFERLAB_S3_ACCESS_KEY'), file).toEqual({
          name: 'TRANSFERLAB_S3_ACCESS_KEY',
          valueFrom: { secretKeyRef: { name: expected.name, key: expected.access } },
        });
        expect(env(container, 'TRANSFERLAB_S3_SECRET_KEY'), file).toEqual({
          name: 'TRANSFERLAB_S3_SECRET_KEY',
          valueFrom: { secretKeyRef: { name: expected.name, key: expected.secret } },
        });
        for (const variable of container.env ?? []) {
          if (/ACCESS_KEY$|SECRET_KEY$|PASSWORD/.test(variable.name) && !variable.name.endsWith('_KEY_KEY')) {
            expect(variable.value, `${file}: ${variable.name} must not be a plain value`).toBeUndefined();
          }
        }
      }
      const allSecrets = byKind(objects, 'Secret');
      // Every values file but external-values.yaml leaves TLS and the API token to the chart's generated Secrets.
      const generated = file === 'external-values.yaml' ? [] : [`${RELEASE}-api-token`, `${RELEASE}-tls`];
      expect(
        allSecrets
          .map((s) => s.metadata.name)
          .filter((name) => /-(api-token|tls)$/.test(name))
          .sort(),
        file,
      ).toEqual(generated);
      const secrets = allSecrets.filter((s) => !generated.includes(s.metadata.name));
      if (BUNDLED.includes(file)) {
        // The generated NATS login, and the Secret the MinIO chart generates for itself.
        expect(secrets.map((s) => s.metadata.name).sort(), file).toEqual([`${RELEASE}-minio`, `${RELEASE}-nats-auth`]);
      } else if (file === 'keys-in-values.yaml') {
        // Keys given in values: the chart makes the Secret, and the keys appear nowhere else.
        expect(secrets.map((s) => s.metadata.name)).toEqual([`${RELEASE}-s3`]);
        expect(secrets[0]!.data).toEqual({
          accessKey: Buffer.from('ci-access-key').toString('base64'),
          secretKey: Buffer.from('ci-secret-key').toString('base64'),
        });
        const others = JSON.stringify(objects.filter((o) => o.kind !== 'Secret'));
        expect(others).not.toContain('ci-secret-key');
        expect(others).not.toContain(Buffer.from('ci-secret-key').toString('base64'));
      } else {
        expect(secrets, `${file} names an existing Secret: the chart makes none`).toEqual([]);
      }
    }
  });

  it("has a `helm test` hook that checks every service, NATS and S3 with the services' own settings", () => {
    expect(existsSync(join(REPO, 'deploy/helm-test.ts'))).toBe(true);
    for (const [file, objects] of renders) {
      const pod = named(objects, 'Pod', `${RELEASE}-test`);
      expect(pod.metadata.annotations, file).toMatchObject({ 'helm.sh/hook': 'test' });
      const check = (pod.spec as PodSpec).containers[0]! as Container & { image: string };
      expect(check.image, file).toBe((containerOf(objects, 'controller') as Container & { image: string }).image);
      expect(check.args).toEqual(['deploy/helm-test.ts']);
      expect(check.envFrom).toEqual([{ configMapRef: { name: `${RELEASE}-config` } }]);
      const controller = containerOf(objects, 'controller');
      expect(parseTargets(envValue(check, 'TRANSFERLAB_CHECK_GRPC'))).toEqual([
        ['controller', `${RELEASE}-controller:50060`],
        ['dataset-splitter', envValue(controller, 'TRANSFERLAB_SPLITTER_ADDR')],
        ['transplanter', envValue(controller, 'TRANSFERLAB_TRANSPLANTER_ADDR')],
        ['evaluator', envValue(controller, 'TRANSFERLAB_EVALUATOR_ADDR')],
      ]);
      for (const name of [
        'TRANSFERLAB_S3_ACCESS_KEY',
        'TRANSFERLAB_S3_SECRET_KEY',
        'TRANSFERLAB_NATS_USER',
        'TRANSFERLAB_NATS_PASSWORD',
      ]) {
        expect(env(check, name), `${file}: ${name}`).toEqual(env(containerOf(objects, 'evaluator'), name));
      }
    }
  });

  it('probes every service with gRPC health checks: on the plaintext health port with TLS, else on its own port', async () => {
    const plain = await template(['tls: { enabled: false }\napiToken: { enabled: false }\n']);
    for (const [file, objects] of [...renders, ['tls off', plain] as const]) {
      for (const service of SERVICES) {
        const container = containerOf(objects, service);
        const port = file === 'tls off' ? PORTS[service] : HEALTH_PORT;
        for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe'] as const) {
          const probe = container[kind];
          expect(probe?.grpc, `${file}: ${service} ${kind}`).toEqual({ port });
          expect(probe?.httpGet ?? probe?.tcpSocket ?? probe?.exec).toBeUndefined();
        }
        if (file !== 'tls off') expect(envValue(container, 'TRANSFERLAB_HEALTH_PORT')).toBe(String(HEALTH_PORT));
        else expect(env(container, 'TRANSFERLAB_HEALTH_PORT')).toBeUndefined();
      }
    }
    expect(byKind(plain, 'Secret').map((secret) => secret.metadata.name)).not.toContain(`${RELEASE}-tls`);
    for (const service of SERVICES) {
      expect(env(containerOf(plain, service), 'TRANSFERLAB_TLS_CERT_FILE')).toBeUndefined();
      expect(env(containerOf(plain, service), 'TRANSFERLAB_API_TOKEN_FILE')).toBeUndefined();
    }
  });

  it('serves TLS everywhere, mutual TLS between the services, and the token on the controller only', () => {
    for (const [file, objects] of renders) {
      const tlsSecret = file === 'external-values.yaml' ? 'transferlab-tls' : `${RELEASE}-tls`;
      for (const service of [...SERVICES, 'test'] as const) {
        const spec =
          service === 'test'
            ? (named(objects, 'Pod', `${RELEASE}-test`).spec as PodSpec)
            : podSpec(named(objects, 'Deployment', `${RELEASE}-${service}`));
        const container = spec.containers[0]!;
        const where = `${file}: ${service}`;
        expect(envValue(container, 'TRANSFERLAB_TLS_CERT_FILE'), where).toBe('/etc/transferlab/tls/tls.crt');
        expect(envValue(container, 'TRANSFERLAB_TLS_KEY_FILE'), where).toBe('/etc/transferlab/tls/tls.key');
        expect(envValue(container, 'TRANSFERLAB_TLS_CA_FILE'), where).toBe('/etc/transferlab/tls/ca.crt');
        const mutual = service !== 'controller' && service !== 'test';
        expect(env(container, 'TRANSFERLAB_TLS_CLIENT_CA_FILE')?.value, where).toBe(
          mutual ? '/etc/transferlab/tls/ca.crt' : undefined,
        );
        expect(env(container, 'TRANSFERLAB_API_TOKEN_FILE')?.value, where).toBe(
          service === 'controller' ? '/etc/transferlab/api-token/token' : undefined,
        );
        const volumes = spec.volumes ?? [];
        expect(volumes.find((volume) => volume.name === 'tls')?.secret?.secretName, where).toBe(tlsSecret);
        const token = volumes.find((volume) => volume.name === 'api-token')?.secret;
        if (service === 'controller') {
          expect(token?.secretName, where).toBe(
            file === 'external-values.yaml' ? 'transferlab-api-token' : `${RELEASE}-api-token`,
          );
          expect(token?.items?.[0]?.key, where).toBe(file === 'external-values.yaml' ? 'TOKEN' : 'token');
        } else {
          expect(token, where).toBeUndefined();
        }
        for (const variable of container.env ?? []) expect(variable.name, where).not.toBe('TRANSFERLAB_API_TOKEN');
      }
    }
  });

  it('generates a CA and a certificate that serve mutual TLS under every service name, kept across upgrades', async () => {
    const objects = render('default-values.yaml');
    const data = named(objects, 'Secret', `${RELEASE}-tls`).data as Record<string, string>;
    const dir = await mkdtemp(join(tmpdir(), 'tl-chart-tls-'));
    const files: Record<string, string> = {};
    for (const key of ['ca.crt', 'tls.crt', 'tls.key']) {
      files[key] = join(dir, key);
      await writeFile(files[key], Buffer.from(data[key]!, 'base64'));
    }
    const log = createLogger('chart-tls', { level: 'silent' });
    const own = { TRANSFERLAB_TLS_CERT_FILE: files['tls.crt']!, TRANSFERLAB_TLS_KEY_FILE: files['tls.key']! };
    const server = await startGrpcServer({
      services: [],
      port: 0,
      log,
      security: serverSecurityFromEnv({ ...own, TRANSFERLAB_TLS_CLIENT_CA_FILE: files['ca.crt']! }),
    });
    try {
      const check = (env: Record<string, string>) =>
        healthStatus(`127.0.0.1:${server.port}`, '', { security: clientSecurityFromEnv(env), deadlineMs: 5000 });
      const client = { ...own, TRANSFERLAB_TLS_CA_FILE: files['ca.crt']! };
      for (const service of SERVICES) {
        for (const name of [`${RELEASE}-${service}`, `${RELEASE}-${service}.${NAMESPACE}.svc.cluster.local`]) {
          expect(await check({ ...client, TRANSFERLAB_TLS_SERVER_NAME: name }), name).toBe('SERVING');
        }
      }
      // 127.0.0.1 is in the certificate, for `kubectl port-forward`.
      expect(await check(client)).toBe('SERVING');
      expect(await check({ ...client, TRANSFERLAB_TLS_SERVER_NAME: 'elsewhere.example' })).toMatch(/^DOWN/);
      expect(await check({ TRANSFERLAB_TLS_CA_FILE: files['ca.crt']! }), 'no client certificate').toMatch(/^DOWN/);
    } finally {
      await server.shutdown(1000);
      await rm(dir, { recursive: true, force: true });
    }
    const secretTemplate = await readFile(join(CHART, 'templates', 'secret.yaml'), 'utf8');
    expect(secretTemplate.match(/lookup "v1" "Secret" \.Release\.Namespace \$name/g)).toHaveLength(3);
    const tokens = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const again = await template([]);
      tokens.add((named(again, 'Secret', `${RELEASE}-api-token`).data as { token: string }).token);
    }
    expect(tokens.size, 'a fresh install gets a random token').toBe(2);
    for (const token of tokens) expect(Buffer.from(token, 'base64').toString()).toMatch(/^[A-Za-z0-9]{48}$/);
  }, 60_000);

  it('hands the trainer Job settings (GPU count, placement, deadline, checkpoints) to the controller', () => {
    const gpu = containerOf(render('gpu-values.yaml'), 'controller');
    expect(envValue(gpu, TRAINER_ENV.executor)).toBe('kubernetes');
    expect(env(gpu, TRAINER_ENV.namespace)?.valueFrom).toEqual({ fieldRef: { fieldPath: 'metadata.namespace' } });
    expect(envValue(gpu, TRAINER_ENV.image)).toBe('transferlab-trainer-gpu:0.1.0');
    expect(envValue(gpu, TRAINER_ENV.gpus)).toBe('2');
    expect(envValue(gpu, TRAINER_ENV.gpuResource)).toBe('nvidia.com/gpu');
    expect(envValue(gpu, TRAINER_ENV.cpu)).toBe('8');
    expect(envValue(gpu, TRAINER_ENV.memory)).toBe('48Gi');
    expect(JSON.parse(envValue(gpu, TRAINER_ENV.nodeSelector))).toEqual({
      'nvidia.com/gpu.present': 'true',
      'node.kubernetes.io/instance-type': 'p3.8xlarge',
    });
    expect(JSON.parse(envValue(gpu, TRAINER_ENV.tolerations))).toEqual([
      { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
    ]);
    expect(JSON.parse(envValue(gpu, TRAINER_ENV.affinity))).toHaveProperty('nodeAffinity');
    expect(envValue(gpu, TRAINER_ENV.runtimeClassName)).toBe('nvidia');
    expect(envValue(gpu, TRAINER_ENV.priorityClassName)).toBe('transferlab-training');
    expect(envValue(gpu, TRAINER_ENV.activeDeadlineSeconds)).toBe('172800');
    expect(envValue(gpu, TRAINER_ENV.ttlSecondsAfterFinished)).toBe('3600');
    expect(envValue(gpu, TRAINER_ENV.configMap)).toBe(`${RELEASE}-config`);
    expect(envValue(gpu, TRAINER_ENV.serviceAccount)).toBe(`${RELEASE}-trainer`);
    expect(envValue(gpu, 'TRANSFERLAB_MAX_TRAINERS')).toBe('8');
    expect(envValue(gpu, TRAINER_ENV.instance)).toBe(RELEASE);
    expect(envValue(gpu, TRAINER_ENV.pendingTimeoutSeconds)).toBe('1800');
    // A Pending trainer is a queued cell: no time limit by default.
    expect(envValue(gpu, TRAINER_ENV.queueTimeoutSeconds)).toBe('0');
    expect(envValue(gpu, TRAINER_ENV.imagePullAttempts)).toBe('6');
    expect(envValue(gpu, TRAINER_ENV.terminationGracePeriodSeconds)).toBe('60');
    // The trainers reference the same Secret as the services, key by key.
    expect(envValue(gpu, TRAINER_ENV.s3Secret)).toBe('transferlab-s3');
    expect(envValue(gpu, TRAINER_ENV.s3AccessKeyKey)).toBe('accessKey');
    expect(envValue(gpu, TRAINER_ENV.s3SecretKeyKey)).toBe('secretKey');
    const external = containerOf(render('external-values.yaml'), 'controller');
    expect(JSON.parse(envValue(external, TRAINER_ENV.imagePullSecrets))).toEqual([{ name: 'regcred' }]);
    expect(envValue(external, TRAINER_ENV.image)).toBe('registry.example.com/ml/transferlab-trainer-gpu:0.1.0-ci');
    expect(envValue(external, TRAINER_ENV.s3AccessKeyKey)).toBe('AWS_ACCESS_KEY_ID');

    // Without placement settings the controller gets none (defaults: one GPU, no runtime class),
    // but trainers tolerate the usual GPU taint, log in to the bundled NATS and have an owner.
    const plain = containerOf(render('default-values.yaml'), 'controller');
    expect(envValue(plain, TRAINER_ENV.gpus)).toBe('1');
    expect(env(plain, TRAINER_ENV.runtimeClassName)).toBeUndefined();
    expect(env(plain, TRAINER_ENV.priorityClassName)).toBeUndefined();
    expect(JSON.parse(envValue(plain, TRAINER_ENV.tolerations))).toEqual([
      { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
    ]);
    expect(JSON.parse(envValue(plain, TRAINER_ENV.labels))).toEqual({});
    expect(JSON.parse(envValue(plain, TRAINER_ENV.env))).toEqual([
      { name: 'TRANSFERLAB_NATS_USER', valueFrom: { secretKeyRef: { name: `${RELEASE}-nats-auth`, key: 'user' } } },
      {
        name: 'TRANSFERLAB_NATS_PASSWORD',
        valueFrom: { secretKeyRef: { name: `${RELEASE}-nats-auth`, key: 'password' } },
      },
    ]);
    expect(env(plain, TRAINER_ENV.suspend)).toBeUndefined();
    expect(envValue(plain, TRAINER_ENV.jobOwner)).toBe(`${RELEASE}-trainer-jobs`);
    // External NATS without a login: the trainers get none either.
    expect(JSON.parse(envValue(containerOf(render('gpu-values.yaml'), 'controller'), TRAINER_ENV.env))).toEqual([]);
    // Only the controller launches trainers.
    for (const service of SERVICES.filter((s) => s !== 'controller')) {
      expect(env(containerOf(render('gpu-values.yaml'), service), TRAINER_ENV.image)).toBeUndefined();
    }
  });

  it('gives the controller settings it accepts, from which it builds valid trainer Jobs', async () => {
    // The controller's own configuration code reads the environment the chart renders
    // (ConfigMap + plain values + the pod's namespace), then builds the Job of one cell.
    const [cell] = expandGrid(
      parseSpec(
        'name: chart\ndataset: { kind: mnist }\nsplit: { kind: random }\nnet: { kind: small }\n' +
          'layers: [3]\narms: [AnB+]\n',
        'spec.yaml',
      ),
    ).cells.filter((c) => c.kind === 'transfer');
    for (const [file, objects] of renders) {
      const container = containerOf(objects, 'controller');
      const environment: Record<string, string> = {
        ...(named(objects, 'ConfigMap', `${RELEASE}-config`).data as Record<string, string>),
      };
      for (const variable of container.env ?? []) {
        if (variable.value !== undefined) environment[variable.name] = variable.value;
        if (variable.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace') environment[variable.name] = NAMESPACE;
      }
      const config = loadConfig(controllerConfig, environment);
      expect(config.executor, file).toBe('kubernetes');
      const settings = trainerJobSettings(config, config.k8sNamespace ?? 'missing');
      const job = buildTrainerJob(cell!, { sweepId: 'chart-0123abcd', attempt: 1, settings }) as ManifestObject;
      expect(await validateManifests([...objects, job]), file).toEqual([]);

      const pod = (job.spec as { template: { metadata: { labels: Record<string, string> }; spec: PodSpec } }).template;
      expect(job.metadata.namespace).toBe(NAMESPACE);
      expect(pod.spec.serviceAccountName).toBe(`${RELEASE}-trainer`);
      expect(pod.spec.containers[0]!.envFrom).toEqual([{ configMapRef: { name: `${RELEASE}-config` } }]);
      const access = env(pod.spec.containers[0]!, 'TRANSFERLAB_S3_ACCESS_KEY');
      expect(access?.valueFrom?.secretKeyRef, file).toEqual(
        env(containerOf(objects, 'evaluator'), 'TRANSFERLAB_S3_ACCESS_KEY')?.valueFrom?.secretKeyRef,
      );
      // The trainers log in to NATS as the services do.
      for (const name of ['TRANSFERLAB_NATS_USER', 'TRANSFERLAB_NATS_PASSWORD']) {
        expect(env(pod.spec.containers[0]!, name), `${file}: ${name}`).toEqual(
          env(containerOf(objects, 'evaluator'), name),
        );
      }
      // The owner the controller will look up is rendered, and the Role lets it read just that one.
      expect(config.k8sJobOwner, file).toBe(named(objects, 'ConfigMap', `${RELEASE}-trainer-jobs`).metadata.name);
      // The PodMonitor (monitoring values) selects these pods.
      expect(pod.metadata.labels).toMatchObject({
        'app.kubernetes.io/instance': RELEASE,
        'app.kubernetes.io/component': 'trainer',
      });
      if (file === 'gpu-values.yaml') {
        const jobSpec = job.spec as { activeDeadlineSeconds: number; ttlSecondsAfterFinished: number };
        expect(jobSpec.activeDeadlineSeconds).toBe(172800);
        expect(jobSpec.ttlSecondsAfterFinished).toBe(3600);
        const spec = pod.spec as PodSpec & Record<string, unknown>;
        expect(spec.runtimeClassName).toBe('nvidia');
        expect(spec.priorityClassName).toBe('transferlab-training');
        expect(spec.nodeSelector).toEqual({
          'nvidia.com/gpu.present': 'true',
          'node.kubernetes.io/instance-type': 'p3.8xlarge',
        });
        expect(spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
        expect((spec.containers[0] as unknown as { resources: object }).resources).toEqual({
          requests: { cpu: '8', memory: '48Gi' },
          limits: { memory: '48Gi', 'nvidia.com/gpu': '2' },
        });
      }
      if (file === 'values-gpu.yaml') {
        // The GPU cluster's values file: TensorFlow's memory growth, a larger /dev/shm, the GPU taint.
        const spec = pod.spec as PodSpec & Record<string, unknown>;
        expect(spec.containers[0]!.env).toContainEqual({ name: 'TF_FORCE_GPU_ALLOW_GROWTH', value: 'true' });
        expect(spec.volumes).toContainEqual({ name: 'dshm', emptyDir: { medium: 'Memory', sizeLimit: '2Gi' } });
        expect(spec.containers[0]!.volumeMounts).toContainEqual({ name: 'dshm', mountPath: '/dev/shm' });
        expect(spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
        expect((spec.containers[0] as unknown as { image: string }).image).toBe(
          'registry.example.com/transferlab/transferlab-trainer-gpu:0.1.0',
        );
      }
    }
  });

  it('puts trainer Jobs in a Kueue queue, created suspended, with extra labels, annotations, env and volumes', async () => {
    const objects = await template([
      'kueue: { queueName: gpu-queue }\n' +
        'trainer:\n' +
        '  labels: { team: vision }\n' +
        '  annotations: { example.com/cost-centre: ml-42 }\n' +
        '  env: [{ name: HF_HOME, value: /cache }]\n' +
        '  volumes: [{ name: cache, persistentVolumeClaim: { claimName: model-cache } }]\n' +
        '  volumeMounts: [{ name: cache, mountPath: /cache }]\n',
    ]);
    const container = containerOf(objects, 'controller');
    const environment: Record<string, string> = {
      ...(named(objects, 'ConfigMap', `${RELEASE}-config`).data as Record<string, string>),
      TRANSFERLAB_K8S_NAMESPACE: NAMESPACE,
    };
    for (const variable of container.env ?? [])
      if (variable.value !== undefined) environment[variable.name] = variable.value;
    const config = loadConfig(controllerConfig, environment);
    const [cell] = expandGrid(
      parseSpec('name: q\ndataset: { kind: mnist }\nnet: { kind: small }\nlayers: [1]\narms: [baseB]\n', 'q.yaml'),
    ).cells;
    const job = buildTrainerJob(cell!, {
      sweepId: 'q-0123abcd',
      attempt: 1,
      settings: trainerJobSettings(config, NAMESPACE),
    }) as ManifestObject & {
      spec: { suspend?: boolean; template: { metadata: ManifestObject['metadata']; spec: PodSpec } };
    };
    expect(await validateManifests([...objects, job])).toEqual([]);
    expect(job.spec.suspend).toBe(true);
    for (const metadata of [job.metadata, job.spec.template.metadata]) {
      expect(metadata.labels).toMatchObject({ 'kueue.x-k8s.io/queue-name': 'gpu-queue', team: 'vision' });
      expect(metadata.annotations).toMatchObject({ 'example.com/cost-centre': 'ml-42' });
    }
    const trainer = job.spec.template.spec.containers[0]!;
    expect(trainer.env).toContainEqual({ name: 'HF_HOME', value: '/cache' });
    expect(env(trainer, 'TRANSFERLAB_NATS_PASSWORD')?.valueFrom?.secretKeyRef?.name).toBe(`${RELEASE}-nats-auth`);
    expect(job.spec.template.spec.volumes).toContainEqual({
      name: 'cache',
      persistentVolumeClaim: { claimName: 'model-cache' },
    });
    expect(trainer.volumeMounts).toContainEqual({ name: 'cache', mountPath: '/cache' });
    // A queue name that is not a Kubernetes name is refused by the schema.
    expect(await templateError('kueue: { queueName: "GPU Queue" }\n')).toMatch(/queueName/);
    // So are extra labels that would replace the ones the controller finds its Jobs by; and the
    // controller refuses them at start-up if they come another way.
    expect(await templateError('trainer: { labels: { app.kubernetes.io/instance: other } }\n')).toMatch(/labels/);
    expect(await templateError('trainer: { annotations: { transferlab.io/cell-id: x } }\n')).toMatch(/annotations/);
    const hijack = loadConfig(controllerConfig, {
      ...environment,
      TRANSFERLAB_K8S_LABELS: '{"app.kubernetes.io/instance":"other","team":"vision"}',
    });
    expect(() => trainerJobSettings(hijack, NAMESPACE)).toThrow(
      /TRANSFERLAB_K8S_LABELS: app.kubernetes.io\/instance set by the controller itself/,
    );
  });

  it('uses the external NATS and S3 endpoints as given', () => {
    const data = named(render('external-values.yaml'), 'ConfigMap', `${RELEASE}-config`).data;
    expect(data).toMatchObject({
      TRANSFERLAB_NATS_URL: 'nats://nats-0.nats.messaging.svc:4222,nats://nats-1.nats.messaging.svc:4222',
      TRANSFERLAB_S3_ENDPOINT: 'https://s3.eu-west-1.amazonaws.com',
      TRANSFERLAB_S3_BUCKET: 'transferlab-results',
      TRANSFERLAB_S3_REGION: 'eu-west-1',
      TRANSFERLAB_S3_PREFIX: 'sweeps/team-a',
      // Trainer pods read the same ConfigMap: their metrics must be reachable, and traced.
      TRANSFERLAB_METRICS_HOST: '0.0.0.0',
      TRANSFERLAB_METRICS_PORT: '9464',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector.observability.svc:4318',
    });
    const splitter = named(render('external-values.yaml'), 'Deployment', `${RELEASE}-dataset-splitter`);
    expect(podSpec(splitter).volumes).toContainEqual({
      name: 'data',
      persistentVolumeClaim: { claimName: 'imagenet', readOnly: true },
    });
    expect(envValue(podSpec(splitter).containers[0]!, 'TRANSFERLAB_DATA_ROOT')).toBe('/datasets');
    expect(containerOf(render('external-values.yaml'), 'evaluator')).toMatchObject({
      image: 'registry.example.com/ml/transferlab-evaluator:0.1.0-ci',
    });
  });

  it('renders the NATS and MinIO subcharts only while they are on', () => {
    const subchartObjects = (objects: ManifestObject[]) =>
      objects.filter((o) => !ours(objects).includes(o)).map((o) => `${o.kind}/${o.metadata.name}`);
    for (const [file, objects] of renders) {
      if (BUNDLED.includes(file)) {
        expect(subchartObjects(objects), file).toEqual(
          expect.arrayContaining([`StatefulSet/${RELEASE}-nats`, `Deployment/${RELEASE}-minio`]),
        );
      } else {
        expect(subchartObjects(objects), file).toEqual([]);
      }
    }
  });
});

interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}
interface PolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: unknown;
}
interface PolicyRule {
  ports?: { port?: number | string; protocol?: string }[];
  from?: PolicyPeer[];
}
interface PodAt {
  namespace: string;
  labels: Record<string, string>;
  /** The namespace's labels; default: the name label every namespace has. */
  namespaceLabels?: Record<string, string>;
}

function selects(selector: LabelSelector, labels: Record<string, string>): boolean {
  const exact = Object.entries(selector.matchLabels ?? {}).every(([key, value]) => labels[key] === value);
  return (
    exact &&
    (selector.matchExpressions ?? []).every(({ key, operator, values = [] }) => {
      if (operator === 'In') return key in labels && values.includes(labels[key]!);
      if (operator === 'NotIn') return !(key in labels) || !values.includes(labels[key]!);
      return operator === 'Exists' ? key in labels : !(key in labels);
    })
  );
}

/**
 * Whether the NetworkPolicies let `from` reach `to` on TCP `port`, by the API's rules: a pod no
 * policy selects takes everything; a selected pod takes what any of its policies' rules allow.
 */
function allows(policies: ManifestObject[], from: PodAt, to: PodAt, port: number): boolean {
  const applying = policies.filter(
    (p) =>
      p.metadata.namespace === to.namespace &&
      selects((p.spec as { podSelector: LabelSelector }).podSelector, to.labels),
  );
  if (applying.length === 0) return true;
  const namespaceLabels = from.namespaceLabels ?? { 'kubernetes.io/metadata.name': from.namespace };
  return applying.some((policy) =>
    ((policy.spec as { ingress?: PolicyRule[] }).ingress ?? []).some(
      (rule) =>
        (rule.ports === undefined || rule.ports.some((p) => p.port === port)) &&
        (rule.from === undefined ||
          rule.from.some(
            (peer) =>
              peer.ipBlock === undefined &&
              (peer.namespaceSelector
                ? selects(peer.namespaceSelector, namespaceLabels)
                : from.namespace === policy.metadata.namespace) &&
              (peer.podSelector === undefined || selects(peer.podSelector, from.labels)),
          )),
    ),
  );
}

describe('NetworkPolicies', () => {
  const podsOf = (objects: ManifestObject[], settings: ReturnType<typeof trainerJobSettings>) => {
    const at = (labels: Record<string, string>): PodAt => ({ namespace: NAMESPACE, labels });
    const template = (kind: string, name: string) =>
      at(
        (named(objects, kind, name).spec as { template: { metadata: { labels: Record<string, string> } } }).template
          .metadata.labels,
      );
    const [cell] = expandGrid(
      parseSpec('name: np\ndataset: { kind: mnist }\nnet: { kind: small }\nlayers: [1]\narms: [baseB]\n', 'np.yaml'),
    ).cells;
    const job = buildTrainerJob(cell!, { sweepId: 'np-0123abcd', attempt: 1, settings });
    return {
      controller: template('Deployment', `${RELEASE}-controller`),
      splitter: template('Deployment', `${RELEASE}-dataset-splitter`),
      transplanter: template('Deployment', `${RELEASE}-transplanter`),
      evaluator: template('Deployment', `${RELEASE}-evaluator`),
      test: at(named(objects, 'Pod', `${RELEASE}-test`).metadata.labels!),
      trainer: at(job.spec!.template.metadata!.labels!),
      nats: template('StatefulSet', `${RELEASE}-nats`),
      minio: template('Deployment', `${RELEASE}-minio`),
      client: at({ 'transferlab.io/client': 'true' }),
      stranger: at({ app: 'something-else' }),
      prometheus: { namespace: 'monitoring', labels: { 'app.kubernetes.io/name': 'prometheus' } },
    };
  };
  const settingsOf = (objects: ManifestObject[]) => {
    const environment: Record<string, string> = {
      ...(named(objects, 'ConfigMap', `${RELEASE}-config`).data as Record<string, string>),
      TRANSFERLAB_K8S_NAMESPACE: NAMESPACE,
    };
    for (const variable of containerOf(objects, 'controller').env ?? []) {
      if (variable.value !== undefined) environment[variable.name] = variable.value;
    }
    return trainerJobSettings(loadConfig(controllerConfig, environment), NAMESPACE);
  };

  it('let through exactly the traffic of the flow, by default', () => {
    const objects = render('default-values.yaml');
    const policies = byKind(objects, 'NetworkPolicy');
    const pods = podsOf(objects, settingsOf(objects));
    type Name = keyof typeof pods;
    const port: Record<string, number> = {
      controller: 50060,
      splitter: 50061,
      transplanter: 50062,
      evaluator: 50063,
      nats: 4222,
      minio: 9000,
    };
    // Every pod of the release is covered by a policy.
    const stranger = pods.stranger;
    for (const name of ['controller', 'splitter', 'transplanter', 'evaluator', 'trainer', 'nats', 'minio'] as Name[]) {
      expect(allows(policies, stranger, pods[name], port[name] ?? 9464), `${name} is open to anyone`).toBe(false);
    }
    const allowed: [Name, Name, number?][] = [
      ['client', 'controller'],
      ['test', 'controller'],
      ['controller', 'splitter'],
      ['controller', 'transplanter'],
      ['controller', 'evaluator'],
      ['test', 'splitter'],
      ['test', 'transplanter'],
      ['test', 'evaluator'],
      ...(['controller', 'splitter', 'transplanter', 'evaluator', 'trainer', 'test'] as Name[]).flatMap(
        (name): [Name, Name][] => [
          [name, 'nats'],
          [name, 'minio'],
        ],
      ),
      ...(['controller', 'splitter', 'transplanter', 'evaluator', 'trainer'] as Name[]).map(
        (name): [Name, Name, number] => ['prometheus', name, 9464],
      ),
    ];
    for (const [from, to, p] of allowed) {
      expect(allows(policies, pods[from], pods[to], p ?? port[to]!), `${from} -> ${to}`).toBe(true);
    }
    const denied: [Name, Name, number?][] = [
      ['stranger', 'controller'],
      ['trainer', 'controller'],
      ['evaluator', 'splitter'],
      ['splitter', 'controller'],
      ['client', 'evaluator'],
      ['client', 'nats'],
      ['client', 'minio'],
      ['prometheus', 'controller'],
      ['prometheus', 'nats'],
      ['stranger', 'trainer', 9464],
      ['stranger', 'evaluator', 9464],
      ['controller', 'trainer', 9464],
      // The plaintext health port is for the kubelet alone, which these policies do not filter.
      ['stranger', 'controller', HEALTH_PORT],
      ['client', 'controller', HEALTH_PORT],
      ['controller', 'evaluator', HEALTH_PORT],
    ];
    for (const [from, to, p] of denied) {
      expect(allows(policies, pods[from], pods[to], p ?? port[to]!), `${from} -> ${to}`).toBe(false);
    }
  });

  it('admit more sweep clients and scrapers when told, and can be switched off', async () => {
    const objects = await template([
      'networkPolicy:\n' +
        '  clientsFrom: [{ namespaceSelector: { matchLabels: { team: ml } } }]\n' +
        '  metricsFrom: []\n',
    ]);
    expect(await validateManifests(objects)).toEqual([]);
    const policies = byKind(objects, 'NetworkPolicy');
    const pods = podsOf(objects, settingsOf(objects));
    const notebook: PodAt = { namespace: 'notebooks', labels: { app: 'jupyter' }, namespaceLabels: { team: 'ml' } };
    expect(allows(policies, notebook, pods.controller, 50060)).toBe(true);
    expect(allows(policies, notebook, pods.evaluator, 50063)).toBe(false);
    // No scrapers: the metrics ports take nothing.
    expect(allows(policies, pods.prometheus, pods.evaluator, 9464)).toBe(false);
    expect(allows(policies, pods.prometheus, pods.trainer, 9464)).toBe(false);

    const off = await template(['networkPolicy: { enabled: false }\n']);
    expect(byKind(off, 'NetworkPolicy')).toEqual([]);
  });
});

describe('monitoring', () => {
  it('is on by default exactly where the Prometheus Operator serves monitoring.coreos.com/v1', async () => {
    const monitoringKinds = (objects: ManifestObject[]) =>
      objects
        .filter((o) => ['ServiceMonitor', 'PodMonitor'].includes(o.kind) || o.metadata.labels?.grafana_dashboard)
        .map((o) => o.kind)
        .sort();
    const dashboards = (await readdir(join(CHART, 'dashboards'))).filter((f) => f.endsWith('.json')).length;
    const withOperator = await template([], ['--api-versions', 'monitoring.coreos.com/v1']);
    expect(monitoringKinds(withOperator)).toEqual(
      [...Array<string>(dashboards).fill('ConfigMap'), 'PodMonitor', 'ServiceMonitor'].sort(),
    );
    expect(await validateManifests(withOperator)).toEqual([]);
    expect(monitoringKinds(render('default-values.yaml')), 'no operator: nothing to create them for').toEqual([]);
    const switchedOff = await template(
      [
        'monitoring: { serviceMonitor: { enabled: false }, podMonitor: { enabled: false }, dashboards: { enabled: false } }\n',
      ],
      ['--api-versions', 'monitoring.coreos.com/v1'],
    );
    expect(monitoringKinds(switchedOff)).toEqual([]);
    expect(await templateError('monitoring: { podMonitor: { enabled: sometimes } }\n')).toMatch(/enabled/);
  });

  it('adds a ServiceMonitor for every service metrics port only when asked', () => {
    for (const file of CI_FILES.filter((f) => f !== 'monitoring-values.yaml')) {
      expect(byKind(render(file), 'ServiceMonitor'), file).toEqual([]);
    }
    const objects = render('monitoring-values.yaml');
    const [monitor, ...more] = byKind(objects, 'ServiceMonitor');
    expect(more).toEqual([]);
    expect(monitor!.metadata.labels).toMatchObject({ release: 'monitoring' });
    const spec = monitor!.spec as {
      selector: { matchLabels: Record<string, string>; matchExpressions: { values: string[] }[] };
      endpoints: { port: string; path: string; interval: string }[];
      namespaceSelector: { matchNames: string[] };
    };
    expect(spec.endpoints).toEqual([expect.objectContaining({ port: 'metrics', path: '/metrics', interval: '15s' })]);
    expect(spec.namespaceSelector.matchNames).toEqual([NAMESPACE]);
    const selected = byKind(objects, 'Service').filter(
      (service) =>
        Object.entries(spec.selector.matchLabels).every(([k, v]) => service.metadata.labels?.[k] === v) &&
        spec.selector.matchExpressions[0]!.values.includes(
          service.metadata.labels?.['app.kubernetes.io/component'] ?? '',
        ),
    );
    expect(selected.map((s) => s.metadata.name).sort()).toEqual(SERVICES.map((s) => `${RELEASE}-${s}`).sort());
  });

  it('adds a PodMonitor for the trainer pods only when asked', () => {
    for (const file of CI_FILES.filter((f) => f !== 'monitoring-values.yaml')) {
      expect(byKind(render(file), 'PodMonitor'), file).toEqual([]);
    }
    const [monitor, ...more] = byKind(render('monitoring-values.yaml'), 'PodMonitor');
    expect(more).toEqual([]);
    const spec = monitor!.spec as {
      selector: { matchLabels: Record<string, string> };
      podMetricsEndpoints: { path: string; relabelings: { targetLabel: string; replacement: string }[] }[];
    };
    // The labels the controller puts on every trainer Job's pods.
    expect(spec.selector.matchLabels).toEqual({
      'app.kubernetes.io/instance': RELEASE,
      'app.kubernetes.io/component': 'trainer',
    });
    expect(spec.podMetricsEndpoints[0]!.relabelings).toContainEqual(
      expect.objectContaining({ targetLabel: '__address__', replacement: '${1}:9464' }),
    );
  });

  it('ships every dashboard in charts/transferlab/dashboards as a ConfigMap with the sidecar label', async () => {
    const files = (await readdir(join(CHART, 'dashboards')).catch(() => [] as string[])).filter((f) =>
      f.endsWith('.json'),
    );
    const dashboards = byKind(render('monitoring-values.yaml'), 'ConfigMap').filter(
      (c) => c.metadata.labels?.grafana_dashboard === '1',
    );
    expect(dashboards.length).toBe(files.length);
    for (const file of files) {
      const configMap = dashboards.find((c) => Object.keys(c.data as object).includes(file));
      expect(configMap, file).toBeDefined();
      expect(configMap!.metadata.namespace).toBe('monitoring');
      const shipped = JSON.parse((configMap!.data as Record<string, string>)[file]!) as unknown;
      expect(shipped).toEqual(JSON.parse(await readFile(join(CHART, 'dashboards', file), 'utf8')));
    }
    for (const file of CI_FILES.filter((f) => f !== 'monitoring-values.yaml')) {
      expect(
        byKind(render(file), 'ConfigMap').filter((c) => c.metadata.labels?.grafana_dashboard),
        file,
      ).toEqual([]);
    }
  });

  it('makes one ConfigMap per dashboard file, whatever its name, with a configurable label', async () => {
    // A copy of the chart with two dashboards of awkward names.
    const chart = join(out, 'chart');
    await mkdir(join(chart, 'dashboards'), { recursive: true });
    await writeFile(join(chart, 'dashboards', 'Sweep_Overview.v2.json'), '{"title":"a","panels":[]}');
    await writeFile(join(chart, 'dashboards', 'zz-service-health.json'), '{"title":"b"}');
    try {
      const objects = await template([
        'externalNats: { url: "nats://n:4222" }\nexternalS3: { endpoint: "http://s3:9000", existingSecret: s }\n' +
          'monitoring: { dashboards: { enabled: true, label: my_dashboards, labelValue: "yes", folder: "" } }\n',
      ]);
      const dashboards = byKind(objects, 'ConfigMap').filter((c) => c.metadata.labels?.my_dashboards === 'yes');
      const names = dashboards.map((c) => c.metadata.name);
      expect(names).toContain(`${RELEASE}-dashboard-sweep-overview-v2`);
      expect(names).toContain(`${RELEASE}-dashboard-zz-service-health`);
      expect(dashboards.every((c) => c.metadata.namespace === NAMESPACE && !c.metadata.annotations)).toBe(true);
      expect(await validateManifests(objects)).toEqual([]);
    } finally {
      await rm(join(chart, 'dashboards', 'Sweep_Overview.v2.json'));
      await rm(join(chart, 'dashboards', 'zz-service-health.json'));
    }
  });
});

describe('values', () => {
  const external =
    'externalNats: { url: "nats://n:4222" }\nexternalS3: { endpoint: "http://s3:9000", existingSecret: s }\n';

  it('are checked by values.schema.json: a typo or a wrong type is refused', async () => {
    expect(await templateError(`${external}controler:\n  maxTrainers: 2\n`)).toMatch(
      /Additional property controler is not allowed/,
    );
    expect(await templateError(`${external}trainer:\n  gpus: 2\n`)).toMatch(/Additional property gpus is not allowed/);
    expect(await templateError(`${external}trainer:\n  gpu:\n    count: two\n`)).toMatch(/count/);
    expect(await templateError(`${external}externalS3:\n  endpoint: s3.example.com\n`)).toMatch(/endpoint/);
    expect(await templateError(`${external}monitoring:\n  serviceMonitor:\n    enabeld: true\n`)).toMatch(/enabeld/);
  });

  it('must name a bus and a store, and where the S3 keys come from, once the bundled ones are off', async () => {
    const off = 'nats: { enabled: false }\nminio: { enabled: false }\n';
    expect(await templateError(`${off}externalS3: { endpoint: "http://s3:9000", existingSecret: s }\n`)).toMatch(
      /set nats.enabled=true \(bundled\) or externalNats.url/,
    );
    expect(await templateError(`${off}externalNats: { url: "nats://n:4222" }\n`)).toMatch(
      /set minio.enabled=true \(bundled\) or externalS3.endpoint/,
    );
    expect(
      await templateError(`${off}externalNats: { url: "nats://n:4222" }\nexternalS3: { endpoint: "http://s3:9000" }\n`),
    ).toMatch(/S3 keys must come from a Secret/);
  });

  it('bundle NATS (JetStream, with a generated login) and MinIO by default, wired to the services', async () => {
    const objects = render('default-values.yaml');
    const data = named(objects, 'ConfigMap', `${RELEASE}-config`).data as Record<string, string>;
    expect(data.TRANSFERLAB_NATS_URL).toBe(`nats://${RELEASE}-nats:4222`);
    expect(data.TRANSFERLAB_S3_ENDPOINT).toBe(`http://${RELEASE}-minio:9000`);

    // NATS: JetStream on, and a server that requires the user and password of the generated Secret.
    const natsConf = (named(objects, 'ConfigMap', `${RELEASE}-nats-config`).data as Record<string, string>)[
      'nats.conf'
    ]!;
    expect(natsConf).toMatch(/"jetstream": \{/);
    expect(natsConf).toMatch(
      /"authorization": \{\s*"password": \$TRANSFERLAB_NATS_PASSWORD,\s*"user": \$TRANSFERLAB_NATS_USER\s*\}/,
    );
    const server = podSpec(named(objects, 'StatefulSet', `${RELEASE}-nats`)).containers.find((c) => c.name === 'nats')!;
    for (const [name, key] of [
      ['TRANSFERLAB_NATS_USER', 'user'],
      ['TRANSFERLAB_NATS_PASSWORD', 'password'],
    ] as const) {
      expect(env(server, name)?.valueFrom?.secretKeyRef).toEqual({ name: `${RELEASE}-nats-auth`, key });
    }
    const login = named(objects, 'Secret', `${RELEASE}-nats-auth`).data as Record<string, string>;
    expect(Buffer.from(login.user!, 'base64').toString()).toBe('transferlab');
    const password = Buffer.from(login.password!, 'base64').toString();
    // A letter first: NATS reads the password from its environment as a config value, where one
    // starting with a digit would become a number or break the server's configuration.
    expect(password).toMatch(/^[A-Za-z][A-Za-z0-9]{31}$/);
    const elsewhere = JSON.stringify(objects.filter((o) => o.kind !== 'Secret'));
    expect(elsewhere).not.toContain(password);
    expect(elsewhere).not.toContain(login.password!);
    // No nats-box: it is not needed, and would need the login too.
    expect(byKind(objects, 'Deployment').map((d) => d.metadata.name)).not.toContain(`${RELEASE}-nats-box`);

    // MinIO: its own generated Secret, which the services read; none of the chart's insecure extras.
    const minio = podSpec(named(objects, 'Deployment', `${RELEASE}-minio`)).containers[0]!;
    expect(env(minio, 'MINIO_ROOT_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({
      name: `${RELEASE}-minio`,
      key: 'rootPassword',
    });
    expect(env(containerOf(objects, 'evaluator'), 'TRANSFERLAB_S3_SECRET_KEY')?.valueFrom?.secretKeyRef).toEqual({
      name: `${RELEASE}-minio`,
      key: 'rootPassword',
    });
    expect(byKind(objects, 'Job'), 'no post-install Job adding a console user').toEqual([]);
    expect(byKind(objects, 'ServiceAccount').map((a) => a.metadata.name)).not.toContain('minio-sa');

    // Each can be swapped for an external one on its own.
    const onlyNats = await template([
      'minio: { enabled: false }\nexternalS3: { endpoint: "http://s3:9000", existingSecret: s }\n',
    ]);
    expect(await validateManifests(onlyNats)).toEqual([]);
    expect(onlyNats.map((o) => `${o.kind}/${o.metadata.name}`)).toContain(`StatefulSet/${RELEASE}-nats`);
    expect(onlyNats.map((o) => `${o.kind}/${o.metadata.name}`)).not.toContain(`Deployment/${RELEASE}-minio`);
  });

  it('configure the bundled NATS so that it starts, and admits only the generated login', async () => {
    // The rendered nats.conf, run by a real nats-server (Debian's 2.9; the chart's image is
    // 2.11) with only its file paths moved to a temporary folder.
    const objects = render('default-values.yaml');
    const conf = (named(objects, 'ConfigMap', `${RELEASE}-nats-config`).data as Record<string, string>)['nats.conf']!;
    const local = conf
      .replace(/"store_dir": "[^"]*"/, '"store_dir": "{{DIR}}/js"')
      .replace(/"pid_file": "[^"]*"/, '"pid_file": "{{DIR}}/nats.pid"');
    expect(local).not.toBe(conf);
    const login = named(objects, 'Secret', `${RELEASE}-nats-auth`).data as Record<string, string>;
    const user = Buffer.from(login.user!, 'base64').toString();
    const password = Buffer.from(login.password!, 'base64').toString();
    const nats = await startConfiguredNats(local, {
      SERVER_NAME: `${RELEASE}-nats-0`,
      TRANSFERLAB_NATS_USER: user,
      TRANSFERLAB_NATS_PASSWORD: password,
    });
    try {
      const env = { TRANSFERLAB_NATS_URL: nats.url, TRANSFERLAB_NATS_USER: user, TRANSFERLAB_NATS_PASSWORD: password };
      const bus = await openBus('chart-check', env);
      const kv = await bus.kv('chart-check');
      await kv.put('login', new TextEncoder().encode('ok'));
      expect(new TextDecoder().decode((await kv.get('login'))!.value)).toBe('ok');
      await bus.close();
      await expect(openBus('chart-check', { ...env, TRANSFERLAB_NATS_PASSWORD: 'wrong' })).rejects.toThrow(
        /authori[sz]ation/i,
      );
      await expect(openBus('chart-check', { TRANSFERLAB_NATS_URL: nats.url })).rejects.toThrow(/authori[sz]ation/i);
    } finally {
      await nats.stop();
    }
  }, 60_000);

  it('keep the generated NATS login across upgrades: the Secret reads the existing one back (lookup)', async () => {
    // `helm template` cannot look anything up, so each render generates a password; the template
    // must read an existing Secret's values when there is one. Check that it asks for them.
    const secretTemplate = await readFile(join(CHART, 'templates', 'secret.yaml'), 'utf8');
    expect(secretTemplate).toMatch(/lookup "v1" "Secret" \.Release\.Namespace \$name/);
    const passwords = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const objects = await template([]);
      passwords.add((named(objects, 'Secret', `${RELEASE}-nats-auth`).data as { password: string }).password);
    }
    expect(passwords.size, 'a fresh install gets a random password, not a fixed one').toBe(2);
  });

  it('render a NOTES.txt that tells how to start and watch a sweep', async () => {
    // helm renders NOTES.txt only on install; render it here through a ConfigMap in the copy.
    const chart = join(out, 'chart');
    await copyFile(join(chart, 'templates', 'NOTES.txt'), join(chart, 'notes-preview.txt'));
    await writeFile(
      join(chart, 'templates', 'notes-preview.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-preview\ndata:\n' +
        '  notes: {{ tpl (.Files.Get "notes-preview.txt") . | quote }}\n',
    );
    try {
      const objects = await template([await readFile(join(CHART, 'ci/gpu-values.yaml'), 'utf8')]);
      const notes = (named(objects, 'ConfigMap', 'notes-preview').data as { notes: string }).notes;
      expect(notes).toContain(`kubectl -n ${NAMESPACE} port-forward service/${RELEASE}-controller 50060:50060`);
      expect(notes).toContain('transferlab sweep start -f spec.yaml --server 127.0.0.1:50060 --watch');
      expect(notes).toContain('2 x nvidia.com/gpu');
      expect(notes).toContain(`helm test ${RELEASE} -n ${NAMESPACE}`);
      expect(notes).toContain(`owned by ConfigMap ${RELEASE}-trainer-jobs`);
    } finally {
      await rm(join(chart, 'notes-preview.txt'));
      await rm(join(chart, 'templates', 'notes-preview.yaml'));
    }
  });
});

/**
 * The controller's trainer Job variables (services/controller/src/config.ts and
 * packages/runner/src/controller/kubernetes-job.ts read them).
 */
const TRAINER_ENV = {
  executor: 'TRANSFERLAB_EXECUTOR',
  namespace: 'TRANSFERLAB_K8S_NAMESPACE',
  image: 'TRANSFERLAB_K8S_TRAINER_IMAGE',
  gpus: 'TRANSFERLAB_K8S_GPU_COUNT',
  gpuResource: 'TRANSFERLAB_K8S_GPU_RESOURCE',
  cpu: 'TRANSFERLAB_K8S_CPU',
  memory: 'TRANSFERLAB_K8S_MEMORY',
  pendingTimeoutSeconds: 'TRANSFERLAB_K8S_PENDING_TIMEOUT_SECONDS',
  queueTimeoutSeconds: 'TRANSFERLAB_K8S_QUEUE_TIMEOUT_SECONDS',
  imagePullAttempts: 'TRANSFERLAB_K8S_IMAGE_PULL_ATTEMPTS',
  terminationGracePeriodSeconds: 'TRANSFERLAB_K8S_TERMINATION_GRACE_PERIOD_SECONDS',
  instance: 'TRANSFERLAB_K8S_INSTANCE',
  imagePullSecrets: 'TRANSFERLAB_K8S_IMAGE_PULL_SECRETS',
  s3Secret: 'TRANSFERLAB_K8S_S3_SECRET',
  s3AccessKeyKey: 'TRANSFERLAB_K8S_S3_ACCESS_KEY_KEY',
  s3SecretKeyKey: 'TRANSFERLAB_K8S_S3_SECRET_KEY_KEY',
  nodeSelector: 'TRANSFERLAB_K8S_NODE_SELECTOR',
  tolerations: 'TRANSFERLAB_K8S_TOLERATIONS',
  affinity: 'TRANSFERLAB_K8S_AFFINITY',
  runtimeClassName: 'TRANSFERLAB_K8S_RUNTIME_CLASS_NAME',
  priorityClassName: 'TRANSFERLAB_K8S_PRIORITY_CLASS_NAME',
  activeDeadlineSeconds: 'TRANSFERLAB_K8S_ACTIVE_DEADLINE_SECONDS',
  ttlSecondsAfterFinished: 'TRANSFERLAB_K8S_TTL_SECONDS_AFTER_FINISHED',
  configMap: 'TRANSFERLAB_K8S_CONFIG_MAP',
  serviceAccount: 'TRANSFERLAB_K8S_SERVICE_ACCOUNT',
  labels: 'TRANSFERLAB_K8S_LABELS',
  annotations: 'TRANSFERLAB_K8S_ANNOTATIONS',
  env: 'TRANSFERLAB_K8S_ENV',
  volumes: 'TRANSFERLAB_K8S_VOLUMES',
  volumeMounts: 'TRANSFERLAB_K8S_VOLUME_MOUNTS',
  suspend: 'TRANSFERLAB_K8S_SUSPEND',
  jobOwner: 'TRANSFERLAB_K8S_JOB_OWNER',
} as const;
