// A SIMULATED KUBELET for tests against the real control plane (scripts/kube-start.sh). There is
// no container runtime here, so this plays the kubelet of a few Node objects it registers (with
// `nvidia.com/gpu` capacity and a lease it renews): for each pod the real scheduler binds to one
// of them it resolves the container's env from the real ConfigMaps and Secrets, runs the image's
// entrypoint as a local process (an image is mapped to a command line), and reports the pod's
// status to the real API server as a kubelet does (ContainerCreating → Running → Succeeded or
// Failed with the exit code and, for FallbackToLogsOnError, the log tail). A pod deleted while
// it runs (Job deadline, eviction, cancel) gets SIGTERM and, after its grace period, SIGKILL,
// then its final status and the kubelet's final delete. Image pulls are not simulated: an image
// with no mapping fails as ErrImagePull, then ImagePullBackOff, and is tried again after a
// back-off that doubles, as the kubelet does (from `pullBackOffMs` rather than 10 s); an image
// mapped meanwhile (`addImage`: the registry came back) then starts.
//
// What is real around it: API server validation and admission, RBAC, the scheduler, the Job
// controller, the garbage collector, eviction. What is simulated: only this node agent.
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  type V1Container,
  type V1ContainerStatus,
  type V1Node,
  type V1Pod,
  type V1PodCondition,
  makeInformer,
  setHeaderOptions,
} from '@kubernetes/client-node';

export interface SimulatedNode {
  name: string;
  gpus: number;
  /** Default 16 CPUs, 64Gi. */
  cpu?: string;
  memory?: string;
}

export interface SimulatedKubeletOptions {
  /** Credentials that may create Nodes and Leases, read ConfigMaps and Secrets, and write pod status. */
  kubeConfig: KubeConfig;
  /** Every node gets the label `transferlab.io/simulated-pool=<pool>`: tests select their pool with it. */
  pool: string;
  nodes: SimulatedNode[];
  /** Image → the command line its entrypoint stands for here; the container's args are appended. */
  images: Record<string, string[]>;
  /** Variables every container starts with (before its own env). Default: PATH and HOME of this process. */
  baseEnv?: Record<string, string>;
  cwd?: string;
  /** Each line a container writes (stdout and stderr). */
  onOutput?: (podName: string, line: string) => void;
  /** The first back-off between failed pulls (doubling up to 8 times it). Default 200 ms. */
  pullBackOffMs?: number;
}

export const POOL_LABEL = 'transferlab.io/simulated-pool';

interface Container {
  child: ChildProcess;
  /** Set when a test kills it as the kernel would (OOMKilled). */
  killReason?: string;
  killTimer?: NodeJS.Timeout;
  exited: Promise<void>;
}

const STRATEGIC = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);

/** The simulated kubelet of a pool of Node objects (see the top of this file). */
export class SimulatedKubelet {
  private readonly core: CoreV1Api;
  private readonly leases: CoordinationV1Api;
  private readonly nodeNames: Set<string>;
  private readonly handled = new Set<string>();
  private readonly containers = new Map<string, Container>();
  /** Per pod, its status updates in order. */
  private readonly queues = new Map<string, Promise<void>>();
  private readonly informer;
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(private readonly options: SimulatedKubeletOptions) {
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.leases = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.nodeNames = new Set(options.nodes.map((node) => node.name));
    this.informer = makeInformer<V1Pod>(options.kubeConfig, '/api/v1/pods', () => this.core.listPodForAllNamespaces());
  }

  static async start(options: SimulatedKubeletOptions): Promise<SimulatedKubelet> {
    const kubelet = new SimulatedKubelet(options);
    for (const node of options.nodes) await kubelet.register(node);
    await kubelet.renewLeases();
    await kubelet.untainted();
    kubelet.heartbeat = setInterval(() => void kubelet.renewLeases().catch(() => undefined), 10_000);
    const onPod = (pod: V1Pod): void => kubelet.onPod(pod);
    kubelet.informer.on('add', onPod);
    kubelet.informer.on('update', onPod);
    kubelet.informer.on('error', () => {
      // The informer lists again by itself; restart it after a pause as its docs advise.
      if (!kubelet.closed) setTimeout(() => void kubelet.informer.start().catch(() => undefined), 500);
    });
    await kubelet.informer.start();
    return kubelet;
  }

  /** Kills every container, stops watching and removes the pool's nodes. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    await this.informer.stop();
    for (const container of this.containers.values()) container.child.kill('SIGKILL');
    await Promise.all([...this.containers.values()].map((container) => container.exited));
    for (const name of this.nodeNames) {
      await this.core.deleteNode({ name }).catch(() => undefined);
      await this.leases.deleteNamespacedLease({ name, namespace: 'kube-node-lease' }).catch(() => undefined);
    }
  }

  /** Kills a pod's container with SIGKILL as the kernel's OOM killer would: it terminates as OOMKilled. */
  oomKill(namespace: string, podName: string): void {
    const container = this.containers.get(`${namespace}/${podName}`);
    if (!container) throw new Error(`simulated kubelet: no running container in pod ${namespace}/${podName}`);
    container.killReason = 'OOMKilled';
    container.child.kill('SIGKILL');
  }

  /** Makes an image pullable from now on (its pods waiting in ImagePullBackOff start at their next try). */
  addImage(image: string, entrypoint: string[]): void {
    this.options.images[image] = entrypoint;
  }

  /** The pods running (a process) right now, as namespace/name. */
  running(): string[] {
    return [...this.containers.keys()];
  }

  private async register(node: SimulatedNode): Promise<void> {
    const capacity = {
      cpu: node.cpu ?? '16',
      memory: node.memory ?? '64Gi',
      pods: '110',
      'nvidia.com/gpu': String(node.gpus),
    };
    const now = new Date();
    const body: V1Node = {
      metadata: {
        name: node.name,
        labels: {
          'kubernetes.io/hostname': node.name,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': 'amd64',
          [POOL_LABEL]: this.options.pool,
        },
        annotations: { 'transferlab.io/simulated-kubelet': 'test/support/simulated-kubelet.ts' },
      },
      status: {
        capacity,
        allocatable: capacity,
        conditions: [
          {
            type: 'Ready',
            status: 'True',
            reason: 'KubeletReady',
            message: 'simulated kubelet',
            lastHeartbeatTime: now,
            lastTransitionTime: now,
          },
        ],
        nodeInfo: {
          architecture: 'amd64',
          bootID: '',
          containerRuntimeVersion: 'simulated://0',
          kernelVersion: '',
          kubeProxyVersion: '',
          kubeletVersion: 'v1.37.2',
          machineID: '',
          operatingSystem: 'linux',
          osImage: 'simulated',
          systemUUID: '',
        },
      },
    };
    await this.core.createNode({ body });
  }

  /**
   * Waits, as a kubelet's node does before pods land on it, until the node lifecycle controller has
   * seen each node and left no taint: on a loaded machine a new node can carry
   * node.kubernetes.io/not-ready for a moment, and the scheduler then says "untolerated taint"
   * instead of what the test stages.
   */
  private async untainted(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const name of this.nodeNames) {
      for (;;) {
        const taints = (await this.core.readNode({ name })).spec?.taints ?? [];
        if (taints.length === 0) break;
        if (Date.now() > deadline) {
          const keys = taints.map((taint) => `${taint.key}:${taint.effect}`).join(', ');
          throw new Error(`simulated kubelet: node ${name} still has taints after ${timeoutMs / 1000} s: ${keys}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  /** The node lifecycle controller marks a node whose lease is not renewed NotReady and taints it. */
  private async renewLeases(): Promise<void> {
    // A Lease's renewTime is a MicroTime: six fractional digits, which a Date does not print.
    const renewTime = new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
    for (const name of this.nodeNames) {
      const patch = () =>
        this.leases.patchNamespacedLease(
          {
            name,
            namespace: 'kube-node-lease',
            body: { spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime } },
          },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
      try {
        await patch();
      } catch (error) {
        if (!(error instanceof ApiException && error.code === 404)) throw error;
        await this.leases.createNamespacedLease({
          namespace: 'kube-node-lease',
          body: { metadata: { name, namespace: 'kube-node-lease' }, spec: { holderIdentity: name } },
        });
        await patch();
      }
    }
  }

  private onPod(pod: V1Pod): void {
    if (this.closed || !this.nodeNames.has(pod.spec?.nodeName ?? '')) return;
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const key = `${namespace}/${name}`;
    const container = this.containers.get(key);
    if (pod.metadata?.deletionTimestamp) {
      if (container) this.terminate(container, pod);
      else if (!this.handled.has(`${key}/deleted`) && !terminal(pod)) {
        // Never started (or already gone): nothing to stop, the kubelet removes it at once.
        this.handled.add(`${key}/deleted`);
        this.enqueue(key, () => this.finalDelete(namespace, name));
      }
      return;
    }
    if (this.handled.has(key) || terminal(pod)) return;
    this.handled.add(key);
    this.enqueue(key, () => this.startPod(pod));
  }

  private enqueue(key: string, step: () => Promise<void>): void {
    const next = (this.queues.get(key) ?? Promise.resolve()).then(step).catch((error: unknown) => {
      if (!this.closed) console.error(`simulated kubelet: pod ${key}: ${(error as Error).message}`);
    });
    this.queues.set(key, next);
  }

  private async patchStatus(namespace: string, name: string, status: V1Pod['status']): Promise<void> {
    try {
      await this.core.patchNamespacedPodStatus({ name, namespace, body: { status } }, STRATEGIC);
    } catch (error) {
      if (!(error instanceof ApiException && error.code === 404)) throw error;
    }
  }

  private async finalDelete(namespace: string, name: string): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
    } catch (error) {
      if (!(error instanceof ApiException && error.code === 404)) throw error;
    }
  }

  private async startPod(pod: V1Pod): Promise<void> {
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const key = `${namespace}/${name}`;
    const container = pod.spec!.containers[0]!;
    await this.patchStatus(namespace, name, {
      phase: 'Pending',
      hostIP: '127.0.0.1',
      conditions: [condition('Initialized', 'True'), condition('Ready', 'False', 'ContainersNotReady')],
      containerStatuses: [waiting(container, 'ContainerCreating')],
    });
    const image = container.image ?? '';
    const entrypointOf = () => container.command ?? this.options.images[image];
    let backOffMs = this.options.pullBackOffMs ?? 200;
    const maxBackOffMs = backOffMs * 8;
    while (!entrypointOf()?.length) {
      if (this.closed || this.handled.has(`${key}/deleted`)) return;
      await this.patchStatus(namespace, name, {
        containerStatuses: [
          waiting(container, 'ErrImagePull', `failed to pull and unpack image "${image}": not found`),
        ],
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      if (this.closed || this.handled.has(`${key}/deleted`)) return;
      await this.patchStatus(namespace, name, {
        containerStatuses: [waiting(container, 'ImagePullBackOff', `Back-off pulling image "${image}"`)],
      });
      await new Promise((resolve) => setTimeout(resolve, backOffMs));
      backOffMs = Math.min(backOffMs * 2, maxBackOffMs);
    }
    const entrypoint = entrypointOf()!;
    const env = await this.containerEnv(namespace, container);
    if (typeof env === 'string') {
      await this.patchStatus(namespace, name, {
        containerStatuses: [waiting(container, 'CreateContainerConfigError', env)],
      });
      return;
    }
    const child = spawn(entrypoint[0]!, [...entrypoint.slice(1), ...(container.args ?? [])], {
      env,
      cwd: this.options.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const tail: string[] = [];
    const onLine = (line: string): void => {
      tail.push(line);
      if (tail.length > 80) tail.shift();
      this.options.onOutput?.(name, line);
    };
    forLines(child.stdout!, onLine);
    forLines(child.stderr!, onLine);
    const startedAt = new Date();
    const running: Container = {
      child,
      exited: new Promise<void>((resolve) => {
        child.once('error', (error) => onLine(`simulated kubelet: cannot start ${entrypoint[0]}: ${error.message}`));
        child.once('close', (code, signal) => {
          clearTimeout(running.killTimer);
          this.containers.delete(key);
          const exitCode = code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
          this.enqueue(key, () => this.exited(pod, container, { exitCode, startedAt, tail, running }));
          resolve();
        });
      }),
    };
    this.containers.set(key, running);
    await this.patchStatus(namespace, name, {
      phase: 'Running',
      startTime: startedAt,
      podIP: '127.0.0.1',
      conditions: [condition('Ready', 'True'), condition('ContainersReady', 'True')],
      containerStatuses: [
        {
          name: container.name,
          image: container.image ?? '',
          imageID: '',
          ready: true,
          restartCount: 0,
          started: true,
          state: { running: { startedAt } },
        },
      ],
    });
  }

  /** The pod is being deleted: SIGTERM now, SIGKILL after its grace period. */
  private terminate(container: Container, pod: V1Pod): void {
    if (container.killTimer) return;
    container.child.kill('SIGTERM');
    const grace = pod.metadata?.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
    container.killTimer = setTimeout(() => container.child.kill('SIGKILL'), grace * 1000);
  }

  private async exited(
    pod: V1Pod,
    container: V1Container,
    exit: { exitCode: number; startedAt: Date; tail: string[]; running: Container },
  ): Promise<void> {
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const { exitCode } = exit;
    const reason = exit.running.killReason ?? (exitCode === 0 ? 'Completed' : 'Error');
    const message =
      exitCode !== 0 && container.terminationMessagePolicy === 'FallbackToLogsOnError'
        ? exit.tail.join('\n').slice(-2048)
        : undefined;
    await this.patchStatus(namespace, name, {
      phase: exitCode === 0 ? 'Succeeded' : 'Failed',
      conditions: [condition('Ready', 'False', 'PodCompleted'), condition('ContainersReady', 'False', 'PodCompleted')],
      containerStatuses: [
        {
          name: container.name,
          image: container.image ?? '',
          imageID: '',
          ready: false,
          restartCount: 0,
          started: false,
          state: {
            terminated: {
              exitCode,
              reason,
              ...(message ? { message } : {}),
              startedAt: exit.startedAt,
              finishedAt: new Date(),
            },
          },
        },
      ],
    });
    // A pod that was being deleted is removed once its container stopped (the kubelet's final delete).
    const current = await this.core.readNamespacedPod({ name, namespace }).catch(() => undefined);
    if (current?.metadata?.deletionTimestamp) await this.finalDelete(namespace, name);
  }

  /** The container's environment, or why it cannot be made (the kubelet's CreateContainerConfigError message). */
  private async containerEnv(namespace: string, container: V1Container): Promise<Record<string, string> | string> {
    const env: Record<string, string> = {
      ...(this.options.baseEnv ?? { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' }),
    };
    const read = async (kind: 'configmap' | 'secret', name: string): Promise<Record<string, string> | undefined> => {
      try {
        if (kind === 'configmap') return (await this.core.readNamespacedConfigMap({ name, namespace })).data ?? {};
        const secret = await this.core.readNamespacedSecret({ name, namespace });
        return Object.fromEntries(
          Object.entries(secret.data ?? {}).map(([key, value]) => [key, Buffer.from(value, 'base64').toString('utf8')]),
        );
      } catch (error) {
        if (error instanceof ApiException && error.code === 404) return undefined;
        throw error;
      }
    };
    for (const from of container.envFrom ?? []) {
      const ref = from.configMapRef ?? from.secretRef;
      const kind = from.configMapRef ? 'configmap' : 'secret';
      const data = ref?.name ? await read(kind, ref.name) : undefined;
      if (!data) {
        if (ref?.optional) continue;
        return `${kind} "${ref?.name}" not found`;
      }
      for (const [key, value] of Object.entries(data)) env[`${from.prefix ?? ''}${key}`] = value;
    }
    for (const variable of container.env ?? []) {
      if (variable.value !== undefined) {
        env[variable.name] = variable.value;
        continue;
      }
      const ref = variable.valueFrom?.configMapKeyRef ?? variable.valueFrom?.secretKeyRef;
      if (!ref) continue;
      const kind = variable.valueFrom?.configMapKeyRef ? 'configmap' : 'secret';
      const data = await read(kind, ref.name ?? '');
      const value = data?.[ref.key];
      if (value === undefined) {
        if (ref.optional) continue;
        return data
          ? `couldn't find key ${ref.key} in ${kind === 'secret' ? 'Secret' : 'ConfigMap'} ${namespace}/${ref.name}`
          : `${kind} "${ref.name}" not found`;
      }
      env[variable.name] = value;
    }
    return env;
  }
}

function terminal(pod: V1Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

function condition(type: string, status: string, reason?: string): V1PodCondition {
  return { type, status, lastTransitionTime: new Date(), ...(reason ? { reason } : {}) };
}

function waiting(container: V1Container, reason: string, message?: string): V1ContainerStatus {
  return {
    name: container.name,
    image: container.image ?? '',
    imageID: '',
    ready: false,
    restartCount: 0,
    started: false,
    state: { waiting: { reason, ...(message ? { message } : {}) } },
  };
}

function forLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') onLine(line);
  });
  stream.on('end', () => {
    if (rest.trim() !== '') onLine(rest);
  });
}
