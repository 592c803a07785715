// The trainer Job manifest: names, labels, placement, security, and a schema check of every
// manifest built here with kubernetes-models (the Kubernetes OpenAPI types).
import { Job } from 'kubernetes-models/batch/v1/Job';
import { describe, expect, it } from 'vitest';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import {
  ANNOTATIONS,
  LABELS,
  type TrainerJobSettings,
  buildTrainerJob,
  labelValue,
  trainerJobName,
} from './kubernetes-job.ts';

const cells: Cell[] = expandGrid(
  validateSpec({
    name: 'job-manifest',
    dataset: { kind: 'mnist' },
    net: { kind: 'small', width: 0.25 },
    layers: [1, 3],
    arms: ['baseA', 'baseB', 'AnB', 'AnB+', 'BnB'],
    repeats: 1,
  }),
).cells;
const byName = (name: string): Cell => cells.find((cell) => cell.name === name)!;

const minimal: TrainerJobSettings = {
  namespace: 'ml',
  instance: 'transferlab',
  image: 'registry.example/transferlab-trainer-gpu:1.0.0',
  gpus: 1,
  configMapName: 'transferlab-trainer',
};

const full: TrainerJobSettings = {
  ...minimal,
  imagePullPolicy: 'IfNotPresent',
  imagePullSecrets: ['regcred'],
  gpus: 2,
  resources: { requests: { cpu: '4', memory: '16Gi' }, limits: { cpu: '8', memory: '24Gi' } },
  nodeSelector: { 'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-40GB' },
  tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
  affinity: {
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchExpressions: [{ key: 'gpu', operator: 'In', values: ['true'] }] }],
      },
    },
  },
  runtimeClassName: 'nvidia',
  priorityClassName: 'batch-low',
  activeDeadlineSeconds: 7200,
  ttlSecondsAfterFinished: 3600,
  s3Secret: { name: 'transferlab-s3', accessKeyKey: 'accesskey', secretKeyKey: 'secretkey' },
  env: { TF_FORCE_GPU_ALLOW_GROWTH: 'true' },
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

describe('buildTrainerJob', () => {
  it('builds a Job that validates against the Kubernetes schema, for every cell and both settings', () => {
    for (const settings of [minimal, full]) {
      for (const cell of cells) {
        const manifest = buildTrainerJob(cell, { sweepId: 'job-manifest-0a1b2c3d', attempt: 1, settings });
        expect(() => new Job(manifest as ConstructorParameters<typeof Job>[0]).validate()).not.toThrow();
      }
    }
    // The check has teeth: a wrong type is caught.
    const broken = buildTrainerJob(cells[0]!, { sweepId: 's', attempt: 1, settings: minimal });
    (broken.spec as { backoffLimit: unknown }).backoffLimit = 'none';
    expect(() => new Job(broken as ConstructorParameters<typeof Job>[0]).validate()).toThrow(/backoffLimit/);
  });

  it('labels the Job and its pod: standard labels, sweep, cell, arm (label-safe), n, attempt; full ids in annotations', () => {
    const cell = byName('AnB+ n=3 seed=1');
    const job = buildTrainerJob(cell, { sweepId: 'job-manifest-0a1b2c3d', attempt: 2, settings: minimal });
    const labels = job.metadata!.labels!;
    expect(labels).toMatchObject({
      'app.kubernetes.io/name': 'transferlab',
      'app.kubernetes.io/component': 'trainer',
      'app.kubernetes.io/managed-by': 'transferlab-controller',
      'app.kubernetes.io/instance': 'transferlab',
      'transferlab.io/sweep-id': 'job-manifest-0a1b2c3d',
      'transferlab.io/arm': 'AnB-plus',
      'transferlab.io/n': '3',
      'transferlab.io/attempt': '2',
    });
    for (const value of Object.values(labels)) {
      expect(value).toMatch(LABEL_VALUE);
      expect(value.length).toBeLessThanOrEqual(63);
    }
    expect(labels[LABELS.cellId]).toBe(cell.id);
    expect(job.metadata!.annotations).toEqual({
      [ANNOTATIONS.cellName]: 'AnB+ n=3 seed=1',
      [ANNOTATIONS.cellId]: cell.id,
      [ANNOTATIONS.sweepId]: 'job-manifest-0a1b2c3d',
    });
    expect(job.spec!.template.metadata!.labels).toEqual(labels);
    expect(
      buildTrainerJob(byName('baseA seed=1'), { sweepId: 's', attempt: 1, settings: minimal }).metadata!.labels,
    ).not.toHaveProperty(LABELS.n);
  });

  it('makes label values of anything: + as -plus, unsafe characters as -, long values cut with a hash', () => {
    expect(labelValue('AnB+')).toBe('AnB-plus');
    expect(labelValue('a b/c')).toBe('a-b-c');
    const long = 'x'.repeat(70);
    expect(labelValue(long)).toMatch(/^x{54}-[0-9a-f]{8}$/);
    expect(labelValue(`${long}y`)).not.toBe(labelValue(long));
    for (const value of [labelValue(long), labelValue('-odd-'), labelValue('+')]) expect(value).toMatch(LABEL_VALUE);
  });

  it('names Jobs tl-<sweep>-<cell>-a<attempt>, DNS-1123 and at most 63 characters even for long sweep ids', () => {
    const cell = byName('AnB n=1 seed=1');
    expect(trainerJobName('job-manifest-0a1b2c3d', cell.id, 1)).toBe(
      `tl-job-manifest-0a1b2c3d-${cell.id.slice(0, 10)}-a1`,
    );
    const long = `${'a-very-long-sweep-name'.repeat(3)}-0a1b2c3d`;
    const names = [long, `${long}x`, 'Upper_Case.sweep', 'x'].map((sweep) => trainerJobName(sweep, cell.id, 12));
    for (const name of names) {
      expect(name).toMatch(DNS_LABEL);
      expect(name.length).toBeLessThanOrEqual(63);
    }
    expect(new Set(names).size).toBe(names.length); // two long ids with one prefix stay apart
    expect(() => trainerJobName('s', cell.id, 0)).toThrow(/attempt/);
  });

  it('runs the trainer image with run-cell arguments, one pod, no Kubernetes retries, deadline and TTL', () => {
    const cell = byName('baseB seed=1');
    const job = buildTrainerJob(cell, {
      sweepId: 'sw',
      attempt: 3,
      settings: full,
      env: { TRANSFERLAB_TRACEPARENT: 'tp' },
    });
    const spec = job.spec!;
    expect(spec.backoffLimit).toBe(0);
    expect(spec.activeDeadlineSeconds).toBe(7200);
    expect(spec.ttlSecondsAfterFinished).toBe(3600);
    const pod = spec.template.spec!;
    expect(pod.restartPolicy).toBe('Never');
    const container = pod.containers[0]!;
    expect(container.image).toBe(full.image);
    expect(container.command).toBeUndefined(); // the image's entrypoint
    expect(container.args).toEqual(['run-cell', '--cell-id', cell.id, '--sweep-id', 'sw', '--attempt', '3']);
    expect(container.env).toContainEqual({ name: 'TRANSFERLAB_TRACEPARENT', value: 'tp' });
    expect(container.env).toContainEqual({ name: 'TF_FORCE_GPU_ALLOW_GROWTH', value: 'true' });
  });

  it('asks for GPUs, CPU and memory, and places the pod as configured', () => {
    const pod = buildTrainerJob(byName('baseA seed=1'), { sweepId: 'sw', attempt: 1, settings: full }).spec!.template
      .spec!;
    expect(pod.containers[0]!.resources).toEqual({
      requests: { cpu: '4', memory: '16Gi' },
      limits: { cpu: '8', memory: '24Gi', 'nvidia.com/gpu': '2' },
    });
    expect(pod.nodeSelector).toEqual(full.nodeSelector);
    expect(pod.tolerations).toEqual(full.tolerations);
    expect(pod.affinity).toEqual(full.affinity);
    expect(pod.runtimeClassName).toBe('nvidia');
    expect(pod.priorityClassName).toBe('batch-low');
    expect(pod.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    const cpuOnly = buildTrainerJob(byName('baseA seed=1'), {
      sweepId: 'sw',
      attempt: 1,
      settings: { ...minimal, gpus: 0 },
    });
    expect(cpuOnly.spec!.template.spec!.containers[0]!.resources).toEqual({});
  });

  it('adds extra labels, annotations and volumes, and creates the Job suspended for Kueue', () => {
    const job = buildTrainerJob(byName('baseA seed=1'), {
      sweepId: 'sw',
      attempt: 1,
      settings: {
        ...minimal,
        labels: { 'kueue.x-k8s.io/queue-name': 'gpu' },
        annotations: { 'example.com/team': 'vision' },
        suspend: true,
        volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data' } }],
        volumeMounts: [{ name: 'data', mountPath: '/data' }],
      },
    });
    expect(job.spec!.suspend).toBe(true);
    for (const metadata of [job.metadata!, job.spec!.template.metadata!]) {
      expect(metadata.labels).toMatchObject({
        'kueue.x-k8s.io/queue-name': 'gpu',
        'app.kubernetes.io/component': 'trainer',
      });
      expect(metadata.annotations).toMatchObject({ 'example.com/team': 'vision' });
    }
    const pod = job.spec!.template.spec!;
    expect(pod.volumes!.map((volume) => volume.name)).toEqual(['tmp', 'data']);
    expect(pod.containers[0]!.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    expect(
      buildTrainerJob(byName('baseA seed=1'), { sweepId: 'sw', attempt: 1, settings: minimal }).spec!.suspend,
    ).toBeUndefined();
  });

  it('takes settings from a ConfigMap and the S3 keys from Secret references, never inline', () => {
    const job = buildTrainerJob(byName('baseA seed=1'), { sweepId: 'sw', attempt: 1, settings: full });
    const container = job.spec!.template.spec!.containers[0]!;
    expect(container.envFrom).toEqual([{ configMapRef: { name: 'transferlab-trainer' } }]);
    expect(container.env).toContainEqual({
      name: 'TRANSFERLAB_S3_ACCESS_KEY',
      valueFrom: { secretKeyRef: { name: 'transferlab-s3', key: 'accesskey' } },
    });
    expect(container.env).toContainEqual({
      name: 'TRANSFERLAB_S3_SECRET_KEY',
      valueFrom: { secretKeyRef: { name: 'transferlab-s3', key: 'secretkey' } },
    });
    expect(
      container.env!.filter((variable) => variable.name.startsWith('TRANSFERLAB_S3_')).every((v) => !v.value),
    ).toBe(true);
  });

  it('runs as non-root with a read-only root filesystem, /tmp on an emptyDir, no escalation, no capabilities', () => {
    const pod = buildTrainerJob(byName('baseA seed=1'), { sweepId: 'sw', attempt: 1, settings: minimal }).spec!.template
      .spec!;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
    expect(pod.automountServiceAccountToken).toBe(false);
    const container = pod.containers[0]!;
    expect(container.securityContext).toMatchObject({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(container.volumeMounts).toEqual([{ name: 'tmp', mountPath: '/tmp' }]);
    expect(pod.volumes).toEqual([{ name: 'tmp', emptyDir: {} }]);
  });

  it('adds extra labels, annotations, env, volumes, an owner and suspension from the settings (the chart values)', () => {
    const settings: TrainerJobSettings = {
      ...full,
      labels: { 'kueue.x-k8s.io/queue-name': 'gpu-queue', team: 'vision' },
      annotations: { 'example.com/cost-centre': 'ml-42' },
      extraEnv: [
        { name: 'TRANSFERLAB_NATS_PASSWORD', valueFrom: { secretKeyRef: { name: 'tl-nats-auth', key: 'password' } } },
        { name: 'HF_HOME', value: '/cache' },
      ],
      volumes: [{ name: 'dshm', emptyDir: { medium: 'Memory' } }],
      volumeMounts: [{ name: 'dshm', mountPath: '/dev/shm' }],
      suspend: true,
      ownerReferences: [
        { apiVersion: 'v1', kind: 'ConfigMap', name: 'tl-trainer-jobs', uid: 'c0ffee00-0000-4000-8000-000000000001' },
      ],
    };
    const job = buildTrainerJob(byName('AnB n=1 seed=1'), { sweepId: 'sw', attempt: 1, settings });
    expect(() => new Job(job as ConstructorParameters<typeof Job>[0]).validate()).not.toThrow();
    expect(job.spec!.suspend).toBe(true);
    expect(job.metadata!.ownerReferences).toEqual(settings.ownerReferences);
    for (const metadata of [job.metadata!, job.spec!.template.metadata!]) {
      expect(metadata.labels).toMatchObject({ 'kueue.x-k8s.io/queue-name': 'gpu-queue', team: 'vision' });
      expect(metadata.labels![LABELS.managedBy]).toBe('transferlab-controller');
      expect(metadata.annotations).toMatchObject({ 'example.com/cost-centre': 'ml-42', [ANNOTATIONS.sweepId]: 'sw' });
    }
    const pod = job.spec!.template.spec!;
    const container = pod.containers[0]!;
    expect(container.env).toContainEqual(settings.extraEnv![0]);
    expect(container.env).toContainEqual({ name: 'HF_HOME', value: '/cache' });
    expect(container.env).toContainEqual({ name: 'TF_FORCE_GPU_ALLOW_GROWTH', value: 'true' });
    expect(pod.volumes).toEqual([
      { name: 'tmp', emptyDir: {} },
      { name: 'dshm', emptyDir: { medium: 'Memory' } },
    ]);
    expect(container.volumeMounts).toEqual([
      { name: 'tmp', mountPath: '/tmp' },
      { name: 'dshm', mountPath: '/dev/shm' },
    ]);
    // Without them, none of it appears.
    const plain = buildTrainerJob(byName('AnB n=1 seed=1'), { sweepId: 'sw', attempt: 1, settings: minimal });
    expect(plain.spec!.suspend).toBeUndefined();
    expect(plain.metadata!.ownerReferences).toBeUndefined();
  });

  it('refuses extras that would replace what the executor relies on', () => {
    const cell = byName('baseA seed=1');
    const build = (extra: Partial<TrainerJobSettings>) => () =>
      buildTrainerJob(cell, { sweepId: 'sw', attempt: 1, settings: { ...full, ...extra } });
    expect(build({ labels: { [LABELS.instance]: 'other' } })).toThrow(
      /app.kubernetes.io\/instance is set by the controller/,
    );
    expect(build({ annotations: { [ANNOTATIONS.cellId]: 'x' } })).toThrow(/annotation transferlab.io\/cell-id/);
    expect(build({ labels: { team: 'not a label value' } })).toThrow(/is not a label value/);
    expect(build({ extraEnv: [{ name: 'TRANSFERLAB_S3_SECRET_KEY', value: 'inline' }] })).toThrow(
      /TRANSFERLAB_S3_SECRET_KEY is set twice/,
    );
    expect(build({ volumes: [{ name: 'tmp', emptyDir: {} }] })).toThrow(/volume tmp is declared twice/);
    expect(build({ volumeMounts: [{ name: 'data', mountPath: '/data' }] })).toThrow(/names no volume data/);
  });
});
