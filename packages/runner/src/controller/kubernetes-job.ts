// The batch/v1 Job that trains one cell on a cluster: the manifest, its name and its labels.
// Pure data: nothing here talks to an API server (kubernetes-executor.ts does).
import { createHash } from 'node:crypto';
import type { V1Affinity, V1EnvVar, V1Job, V1Toleration, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import type { Cell } from '@transferlab/experiment';

/** How every trainer Job is shaped: the Helm chart's `trainer` values, passed to the controller as TRANSFERLAB_K8S_*. */
export interface TrainerJobSettings {
  /** Where the Jobs run (the controller's own namespace on a cluster). */
  namespace: string;
  /** `app.kubernetes.io/instance`: the Helm release, so two releases in one namespace never see each other's Jobs. */
  instance: string;
  /** The trainer image (the GPU image on a cluster); its entrypoint is the trainer's main, so only arguments are given. */
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  imagePullSecrets?: string[];
  /** Overrides the image's entrypoint. Default: none (the image's). */
  command?: string[];
  /** GPUs per trainer (a limit, so also the request); 0 asks for none. */
  gpus: number;
  /** The extended resource the GPU device plugin advertises. Default `nvidia.com/gpu`. */
  gpuResource?: string;
  /** CPU and memory (Kubernetes quantities, e.g. `cpu: '4'`, `memory: '16Gi'`); the GPU limit is added from `gpus`. */
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
  affinity?: V1Affinity;
  runtimeClassName?: string;
  priorityClassName?: string;
  /** The trainer needs no API access: default none, and no token is mounted. */
  serviceAccountName?: string;
  /** Longest one attempt may run; the Job fails with DeadlineExceeded after it. Default: no limit. */
  activeDeadlineSeconds?: number;
  /** How long a finished Job (and its pod, with its logs) stays. Default one day. */
  ttlSecondsAfterFinished?: number;
  /** How long a trainer has to write its checkpoint after SIGTERM (cancel, eviction). Default 60 s. */
  terminationGracePeriodSeconds?: number;
  /** The ConfigMap every trainer reads its settings from (envFrom): TRANSFERLAB_NATS_URL, TRANSFERLAB_S3_ENDPOINT, TRANSFERLAB_S3_BUCKET, ... */
  configMapName: string;
  /** The Secret holding the S3 keys, referenced key by key: the manifest never holds a secret. */
  s3Secret?: { name: string; accessKeyKey: string; secretKeyKey: string };
  /** Plain (non-secret) variables for every trainer, e.g. TF_FORCE_GPU_ALLOW_GROWTH. */
  env?: Record<string, string>;
  /** The non-root user and group the trainer runs as. Default 10001, the images' user. */
  runAsUser?: number;
  /**
   * Extra labels and annotations on every trainer Job and its pod (ours win on a clash), e.g.
   * `kueue.x-k8s.io/queue-name` to put the Jobs in a Kueue LocalQueue.
   */
  extraLabels?: Record<string, string>;
  extraAnnotations?: Record<string, string>;
  /**
   * Create each Job suspended (`spec.suspend`): a queue controller such as Kueue admits it by
   * unsuspending it. Until then the cell is queued, with no pending timeout.
   */
  suspend?: boolean;
  /** Extra volumes of the pod and where the trainer mounts them (datasets, caches). */
  volumes?: V1Volume[];
  volumeMounts?: V1VolumeMount[];
}

export const TRAINER_CONTAINER = 'trainer';
export const MANAGED_BY = 'transferlab-controller';

/** Label keys on every trainer Job and its pods. */
export const LABELS = {
  name: 'app.kubernetes.io/name',
  component: 'app.kubernetes.io/component',
  managedBy: 'app.kubernetes.io/managed-by',
  instance: 'app.kubernetes.io/instance',
  sweepId: 'transferlab.io/sweep-id',
  cellId: 'transferlab.io/cell-id',
  arm: 'transferlab.io/arm',
  n: 'transferlab.io/n',
  seed: 'transferlab.io/seed',
  attempt: 'transferlab.io/attempt',
} as const;

/** Annotation keys: the full ids (labels hold at most 63 characters) and the cell's printed name. */
export const ANNOTATIONS = {
  cellName: 'transferlab.io/cell-name',
  cellId: 'transferlab.io/cell-id',
  sweepId: 'transferlab.io/sweep-id',
} as const;

const MAX_NAME = 63;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

const hash8 = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 8);

/**
 * `text` as a label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends). `+` reads
 * `-plus` (AnB+ → AnB-plus); anything else unsafe becomes '-'. A value that had to be cut keeps
 * its first 54 characters and a hash of the whole, so two long ids never share a label.
 */
export function labelValue(text: string): string {
  const safe = text
    .replace(/\+/g, '-plus')
    .replace(/[^A-Za-z0-9_.-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  if (safe.length <= MAX_NAME) return safe;
  return `${safe.slice(0, 54).replace(/[^A-Za-z0-9]+$/, '')}-${hash8(text)}`;
}

/** `text` as a lower-case DNS-1123 fragment of at most `max` characters (a hash keeps cut ones apart). */
function dnsFragment(text: string, max: number): string {
  const safe = text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (safe.length <= max && safe === text) return safe;
  return `${safe.slice(0, max - 9).replace(/-+$/, '')}-${hash8(text)}`.replace(/^-/, '');
}

/**
 * `tl-<sweep>-<cell>-a<attempt>`: a DNS-1123 label of at most 63 characters. The sweep part is
 * the sweep id (cut, with a hash, when long), the cell part the first 10 hex digits of its id.
 */
export function trainerJobName(sweepId: string, cellId: string, attempt: number): string {
  if (!Number.isInteger(attempt) || attempt < 1) throw new Error(`attempt must be a positive integer, got ${attempt}`);
  // A cell id is a sha256 in hex: its first digits are as good a hash as any.
  const cellPart = /^[0-9a-f]{10,}$/.test(cellId) ? cellId.slice(0, 10) : dnsFragment(cellId, 10);
  const tail = `-${cellPart}-a${attempt}`;
  const name = `tl-${dnsFragment(sweepId, MAX_NAME - 3 - tail.length)}${tail}`;
  if (name.length > MAX_NAME || !DNS_LABEL.test(name)) throw new Error(`cannot make a Job name from '${sweepId}'`);
  return name;
}

/** The labels that find one sweep's Jobs (and, with a cell id, one cell's). */
export function trainerSelector(settings: Pick<TrainerJobSettings, 'instance'>, sweepId?: string, cellId?: string) {
  const labels: Record<string, string> = {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.instance]: labelValue(settings.instance),
  };
  if (sweepId !== undefined) labels[LABELS.sweepId] = labelValue(sweepId);
  if (cellId !== undefined) labels[LABELS.cellId] = labelValue(cellId);
  return labels;
}

/** A label selector string (`k=v,k=v`) for the Kubernetes API. */
export function selectorString(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([key, value]) => `${key}=${value}`)
    .join(',');
}

/** The trainer's arguments: its one-shot mode (services/trainer/README.md). */
export function trainerArgs(cellId: string, sweepId: string, attempt: number): string[] {
  return ['run-cell', '--cell-id', cellId, '--sweep-id', sweepId, '--attempt', String(attempt)];
}

/**
 * The Job that trains `cell` for attempt `attempt` of sweep `sweepId`. One pod, never restarted
 * by Kubernetes (`backoffLimit: 0`, `restartPolicy: Never`): the controller owns retries, and
 * each retry is a new Job that resumes from the cell's checkpoint in the store.
 */
export function buildTrainerJob(
  cell: Cell,
  options: { sweepId: string; attempt: number; settings: TrainerJobSettings; env?: Record<string, string> },
): V1Job {
  const { sweepId, attempt, settings } = options;
  const name = trainerJobName(sweepId, cell.id, attempt);
  const labels: Record<string, string> = {
    ...settings.extraLabels,
    [LABELS.name]: 'transferlab',
    [LABELS.component]: 'trainer',
    ...trainerSelector(settings, sweepId, cell.id),
    [LABELS.arm]: labelValue(cell.arm),
    [LABELS.seed]: String(cell.seed),
    [LABELS.attempt]: String(attempt),
  };
  if (cell.n !== undefined) labels[LABELS.n] = String(cell.n);
  for (const [key, value] of Object.entries(labels)) {
    if (!LABEL_VALUE.test(value) || value.length > MAX_NAME)
      throw new Error(`label ${key}='${value}' is not a label value`);
  }
  const annotations = {
    ...settings.extraAnnotations,
    [ANNOTATIONS.cellName]: cell.name,
    [ANNOTATIONS.cellId]: cell.id,
    [ANNOTATIONS.sweepId]: sweepId,
  };

  const env: V1EnvVar[] = [];
  if (settings.s3Secret) {
    const { name: secret, accessKeyKey, secretKeyKey } = settings.s3Secret;
    env.push(
      { name: 'TRANSFERLAB_S3_ACCESS_KEY', valueFrom: { secretKeyRef: { name: secret, key: accessKeyKey } } },
      { name: 'TRANSFERLAB_S3_SECRET_KEY', valueFrom: { secretKeyRef: { name: secret, key: secretKeyKey } } },
    );
  }
  for (const [key, value] of Object.entries({ ...settings.env, ...options.env })) env.push({ name: key, value });

  const limits: Record<string, string> = { ...settings.resources?.limits };
  if (settings.gpus > 0) limits[settings.gpuResource ?? 'nvidia.com/gpu'] = String(settings.gpus);
  const requests: Record<string, string> = { ...settings.resources?.requests };
  const user = settings.runAsUser ?? 10001;

  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace: settings.namespace, labels, annotations },
    spec: {
      backoffLimit: 0,
      ...(settings.suspend ? { suspend: true } : {}),
      ...(settings.activeDeadlineSeconds !== undefined
        ? { activeDeadlineSeconds: settings.activeDeadlineSeconds }
        : {}),
      ttlSecondsAfterFinished: settings.ttlSecondsAfterFinished ?? 86_400,
      template: {
        metadata: { labels, annotations },
        spec: {
          restartPolicy: 'Never',
          terminationGracePeriodSeconds: settings.terminationGracePeriodSeconds ?? 60,
          ...(settings.serviceAccountName ? { serviceAccountName: settings.serviceAccountName } : {}),
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(settings.nodeSelector ? { nodeSelector: settings.nodeSelector } : {}),
          ...(settings.tolerations ? { tolerations: settings.tolerations } : {}),
          ...(settings.affinity ? { affinity: settings.affinity } : {}),
          ...(settings.runtimeClassName ? { runtimeClassName: settings.runtimeClassName } : {}),
          ...(settings.priorityClassName ? { priorityClassName: settings.priorityClassName } : {}),
          ...(settings.imagePullSecrets?.length
            ? { imagePullSecrets: settings.imagePullSecrets.map((secret) => ({ name: secret })) }
            : {}),
          securityContext: {
            runAsNonRoot: true,
            runAsUser: user,
            runAsGroup: user,
            fsGroup: user,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          volumes: [{ name: 'tmp', emptyDir: {} }, ...(settings.volumes ?? [])],
          containers: [
            {
              name: TRAINER_CONTAINER,
              image: settings.image,
              ...(settings.imagePullPolicy ? { imagePullPolicy: settings.imagePullPolicy } : {}),
              ...(settings.command ? { command: settings.command } : {}),
              args: trainerArgs(cell.id, sweepId, attempt),
              envFrom: [{ configMapRef: { name: settings.configMapName } }],
              env,
              resources: {
                ...(Object.keys(requests).length > 0 ? { requests } : {}),
                ...(Object.keys(limits).length > 0 ? { limits } : {}),
              },
              securityContext: {
                runAsNonRoot: true,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                privileged: false,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }, ...(settings.volumeMounts ?? [])],
              // A failed trainer's last log lines become its termination message: the executor
              // puts them in the cell's error without reading pod logs.
              terminationMessagePolicy: 'FallbackToLogsOnError',
            },
          ],
        },
      },
    },
  };
}
