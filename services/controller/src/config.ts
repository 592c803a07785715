import { availableParallelism } from 'node:os';
import * as z from 'zod';
import { portSchema } from '@transferlab/platform';
import { ANNOTATIONS, LABELS, type TrainerJobSettings } from '@transferlab/runner/controller/kubernetes-job';

export const DEFAULT_PORT = 50060;

const address = z.string().regex(/^\S+:\d+$/, 'must be HOST:PORT');
const positiveInt = z.coerce.number().int().positive();
const nonNegativeInt = z.coerce.number().int().min(0);

/** A variable holding JSON (maps and lists from the chart's values), checked against `schema`. */
function json<T extends z.ZodType>(schema: T) {
  return z
    .string()
    .transform((text, context) => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        context.addIssue({ code: 'custom', message: `must be JSON, got '${text.slice(0, 80)}'` });
        return z.NEVER;
      }
    })
    .pipe(schema);
}
const quantities = z.record(z.string(), z.string());

/**
 * The controller's own settings (TRANSFERLAB_<KEY>); the store and the bus adapters read theirs
 * (TRANSFERLAB_STORE or TRANSFERLAB_S3_*, TRANSFERLAB_NATS_URL) in `openStore` / `openBus`.
 */
export const controllerConfig = {
  /** gRPC port of the SweepService. */
  port: portSchema.default(DEFAULT_PORT),
  /** Interface to listen on: 0.0.0.0 in a pod. */
  host: z.string().min(1).default('127.0.0.1'),
  splitterAddr: address.default('127.0.0.1:50061'),
  transplanterAddr: address.default('127.0.0.1:50062'),
  evaluatorAddr: address.default('127.0.0.1:50063'),
  /**
   * Trainer processes at once, and so cells training at once across all sweeps. Default: one per
   * core. With the kubernetes executor, a cap kept in the sweeps' KV bucket (trainer slots), so
   * it holds across sweeps and controller restarts.
   */
  maxTrainers: positiveInt.default(Math.max(1, availableParallelism())),
  /** Attempts per cell, each resuming from the cell's last checkpoint. */
  maxAttempts: positiveInt.default(3),
  /**
   * Where relative dataset paths in a spec resolve when the controller makes splits itself
   * (embedded steps). With the dataset-splitter service, the splitter's own TRANSFERLAB_DATA_ROOT
   * (the same variable) is what counts. Default: the working folder.
   */
  dataRoot: z.string().min(1).optional(),

  /** How trainers run: `process` (child processes here) or `kubernetes` (one Job per cell attempt). */
  executor: z.enum(['process', 'kubernetes']).default('process'),
  // The trainer Jobs (executor=kubernetes), from the chart's `trainer` values.
  /** Where the Jobs go. Default: the controller's own namespace (from its service account), else `default`. */
  k8sNamespace: z.string().min(1).optional(),
  /** `app.kubernetes.io/instance` of the Jobs: the Helm release. */
  k8sInstance: z.string().min(1).default('transferlab'),
  k8sTrainerImage: z.string().min(1).optional(),
  k8sImagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).optional(),
  /** JSON: `["regcred"]` or `[{"name":"regcred"}]`. */
  k8sImagePullSecrets: json(z.array(z.union([z.string(), z.object({ name: z.string() })]))).optional(),
  /** The trainer pods' ServiceAccount. */
  k8sServiceAccount: z.string().min(1).optional(),
  /** The ConfigMap trainers take their settings from (TRANSFERLAB_NATS_URL, TRANSFERLAB_S3_ENDPOINT, ...). */
  k8sConfigMap: z.string().min(1).optional(),
  /** The Secret with the S3 keys, and the keys in it. */
  k8sS3Secret: z.string().min(1).optional(),
  k8sS3AccessKeyKey: z.string().min(1).default('TRANSFERLAB_S3_ACCESS_KEY'),
  k8sS3SecretKeyKey: z.string().min(1).default('TRANSFERLAB_S3_SECRET_KEY'),
  k8sGpuResource: z.string().min(1).default('nvidia.com/gpu'),
  k8sGpuCount: nonNegativeInt.default(1),
  /** JSON `{"requests":{...},"limits":{...}}`; else k8sCpu and k8sMemory. */
  k8sResources: json(z.object({ requests: quantities.optional(), limits: quantities.optional() })).optional(),
  /** CPU request per trainer. */
  k8sCpu: z.string().min(1).optional(),
  /** Memory per trainer: request and limit. */
  k8sMemory: z.string().min(1).optional(),
  k8sNodeSelector: json(z.record(z.string(), z.string())).optional(),
  k8sTolerations: json(z.array(z.looseObject({}))).optional(),
  k8sAffinity: json(z.looseObject({})).optional(),
  k8sRuntimeClassName: z.string().min(1).optional(),
  k8sPriorityClassName: z.string().min(1).optional(),
  /** Longest one attempt may run; 0: no limit. */
  k8sActiveDeadlineSeconds: nonNegativeInt.optional(),
  k8sTtlSecondsAfterFinished: nonNegativeInt.optional(),
  k8sTerminationGracePeriodSeconds: nonNegativeInt.optional(),
  /** How long a trainer may be stuck starting (container config, image pull, a refused pod) before its cell fails. */
  k8sPendingTimeoutSeconds: positiveInt.default(1800),
  /** How long a trainer may stay queued (no node with a free GPU, a used-up quota) before its cell fails; 0: no limit. */
  k8sQueueTimeoutSeconds: nonNegativeInt.default(0),
  /** Failed pulls of the trainer image (the kubelet backs off between them) before the cell fails. */
  k8sImagePullAttempts: positiveInt.default(6),
  /** JSON maps: extra labels and annotations of every trainer Job and pod (e.g. Kueue's queue-name label). */
  k8sLabels: json(z.record(z.string(), z.string())).optional(),
  k8sAnnotations: json(z.record(z.string(), z.string())).optional(),
  /** JSON list of EnvVar (name with value or valueFrom): extra trainer environment, e.g. the NATS login. */
  k8sEnv: json(z.array(z.looseObject({ name: z.string().min(1) }))).optional(),
  /** JSON lists of Volume and VolumeMount: extra trainer volumes. */
  k8sVolumes: json(z.array(z.looseObject({ name: z.string().min(1) }))).optional(),
  k8sVolumeMounts: json(z.array(z.looseObject({ name: z.string().min(1), mountPath: z.string().min(1) }))).optional(),
  /** Create trainer Jobs suspended, for a queue (Kueue) to start them. */
  k8sSuspend: z
    .enum(['true', 'false'])
    .transform((text) => text === 'true')
    .optional(),
  /** A ConfigMap of the namespace that owns every trainer Job (its deletion deletes them). */
  k8sJobOwner: z.string().min(1).optional(),
};

export type ControllerConfig = z.output<z.ZodObject<typeof controllerConfig>>;

/** The trainer Job settings from the configuration; the error names the variable that is missing. */
export function trainerJobSettings(config: ControllerConfig, namespace: string): TrainerJobSettings {
  const required = (value: string | undefined, variable: string): string => {
    if (!value) throw new Error(`invalid configuration:\n  ${variable}: required when TRANSFERLAB_EXECUTOR=kubernetes`);
    return value;
  };
  const resources = config.k8sResources ?? {
    requests: {
      ...(config.k8sCpu ? { cpu: config.k8sCpu } : {}),
      ...(config.k8sMemory ? { memory: config.k8sMemory } : {}),
    },
    limits: config.k8sMemory ? { memory: config.k8sMemory } : {},
  };
  const some = <T extends object>(value: T | undefined): T | undefined =>
    value && Object.keys(value).length > 0 ? value : undefined;
  // The executor finds its Jobs by its own labels: refuse extras that would replace them, at start.
  for (const [variable, extra, own] of [
    ['TRANSFERLAB_K8S_LABELS', config.k8sLabels, Object.values(LABELS)],
    ['TRANSFERLAB_K8S_ANNOTATIONS', config.k8sAnnotations, Object.values(ANNOTATIONS)],
  ] as const) {
    const taken = Object.keys(extra ?? {}).filter((key) => (own as readonly string[]).includes(key));
    if (taken.length > 0) {
      throw new Error(`invalid configuration:\n  ${variable}: ${taken.join(', ')} set by the controller itself`);
    }
  }
  return {
    namespace,
    instance: config.k8sInstance,
    image: required(config.k8sTrainerImage, 'TRANSFERLAB_K8S_TRAINER_IMAGE'),
    imagePullPolicy: config.k8sImagePullPolicy,
    imagePullSecrets: config.k8sImagePullSecrets?.map((secret) => (typeof secret === 'string' ? secret : secret.name)),
    serviceAccountName: config.k8sServiceAccount,
    configMapName: required(config.k8sConfigMap, 'TRANSFERLAB_K8S_CONFIG_MAP'),
    s3Secret: config.k8sS3Secret
      ? { name: config.k8sS3Secret, accessKeyKey: config.k8sS3AccessKeyKey, secretKeyKey: config.k8sS3SecretKeyKey }
      : undefined,
    gpus: config.k8sGpuCount,
    gpuResource: config.k8sGpuResource,
    resources,
    nodeSelector: some(config.k8sNodeSelector),
    tolerations: some(config.k8sTolerations) as TrainerJobSettings['tolerations'],
    affinity: some(config.k8sAffinity) as TrainerJobSettings['affinity'],
    runtimeClassName: config.k8sRuntimeClassName,
    priorityClassName: config.k8sPriorityClassName,
    activeDeadlineSeconds: config.k8sActiveDeadlineSeconds || undefined,
    ttlSecondsAfterFinished: config.k8sTtlSecondsAfterFinished,
    terminationGracePeriodSeconds: config.k8sTerminationGracePeriodSeconds,
    labels: some(config.k8sLabels),
    annotations: some(config.k8sAnnotations),
    extraEnv: some(config.k8sEnv) as TrainerJobSettings['extraEnv'],
    volumes: some(config.k8sVolumes) as TrainerJobSettings['volumes'],
    volumeMounts: some(config.k8sVolumeMounts) as TrainerJobSettings['volumeMounts'],
    suspend: config.k8sSuspend,
  };
}
