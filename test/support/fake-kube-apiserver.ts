// A FAKE Kubernetes API server, kept for the one kind of fault the real control plane
// (scripts/kube-start.sh, used by kubernetes-executor.test.ts) cannot stage on demand: a watch
// connection that breaks mid-stream. It plays just enough of an API server over HTTP for the
// real @kubernetes/client-node:
//
// - batch/v1 Jobs in a namespace: create, get, list (labelSelector), delete (records the
//   propagationPolicy; Background/Foreground also delete the Job's pods);
// - v1 Pods: get, list (labelSelector), delete;
// - watch streams for both (`?watch=true&resourceVersion=N`): newline-delimited JSON events
//   ADDED/MODIFIED/DELETED (BOOKMARK when asked), one resourceVersion counter for everything;
// - test hooks: force "410 Gone", drop watch connections, set Job and Pod status by hand, add pods.
//
// No validation, admission, RBAC, scheduler, Job controller or kubelet: none of it is a real Kubernetes.
import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { V1Job, V1JobStatus, V1Pod, V1PodStatus } from '@kubernetes/client-node';

type Kind = 'Job' | 'Pod';
type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
type KubeObject = V1Job | V1Pod;

export interface FakeKubeApiServerOptions {
  /** A BOOKMARK this often on watches that allow them. Default 10 s. */
  bookmarkIntervalMs?: number;
}

/** What the fake saw happen to Jobs, in order: the tests' timeline. */
export interface JobTimelineEntry {
  at: number;
  event: 'created' | 'succeeded' | 'failed' | 'deleted';
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface Deletion {
  kind: Kind;
  namespace: string;
  name: string;
  propagationPolicy: string | undefined;
}

interface HistoryEntry {
  rv: number;
  kind: Kind;
  namespace: string;
  type: EventType;
  labels: Record<string, string>;
  json: string;
}

interface OpenWatch {
  kind: Kind;
  namespace: string;
  selector: Selector;
  response: ServerResponse;
  timers: NodeJS.Timeout[];
}

type Requirement = { key: string; op: 'in' | 'notin'; values: string[] } | { key: string; op: 'exists' | 'absent' };
type Selector = Requirement[];

const SUFFIX_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

/** A FAKE Kubernetes API server (see the top of this file for what it does and does not). */
export class FakeKubeApiServer {
  readonly url: string;
  /** Every Job event, in order. */
  readonly timeline: JobTimelineEntry[] = [];
  /** Every DELETE of a Job or Pod, with the propagation policy it asked for. */
  readonly deletions: Deletion[] = [];
  /** Watch requests received, per kind: a reconnect shows here. */
  readonly watchRequests: Record<Kind, number> = { Job: 0, Pod: 0 };
  /** List (non-watch GET collection) requests received, per kind: a re-list shows here. */
  readonly listRequests: Record<Kind, number> = { Job: 0, Pod: 0 };

  private rv = 1;
  /** Watches from a resourceVersion older than this get 410 Gone. */
  private compactedRv = 0;
  private history: HistoryEntry[] = [];
  private readonly objects: Record<Kind, Map<string, KubeObject>> = { Job: new Map(), Pod: new Map() };
  private readonly watches = new Set<OpenWatch>();

  private constructor(
    private readonly server: Server,
    private readonly options: FakeKubeApiServerOptions,
  ) {
    const { port } = server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
  }

  static async start(options: FakeKubeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const fake = new FakeKubeApiServer(server, options);
    server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      void fake.handle(request, response).catch((error: unknown) => {
        if (!response.headersSent) fake.sendStatus(response, 500, 'InternalError', (error as Error).message);
        else response.destroy();
      });
    });
    return fake;
  }

  /** Ends every watch and stops listening. */
  async close(): Promise<void> {
    for (const watch of this.watches) this.endWatch(watch);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- test hooks -------------------------------------------------------------------------

  jobs(namespace: string): V1Job[] {
    return this.list('Job', namespace) as V1Job[];
  }

  job(namespace: string, name: string): V1Job | undefined {
    return clone(this.objects.Job.get(`${namespace}/${name}`)) as V1Job | undefined;
  }

  /** The pods of a namespace, or of one Job. */
  pods(namespace: string, jobName?: string): V1Pod[] {
    return (this.list('Pod', namespace) as V1Pod[]).filter(
      (pod) => jobName === undefined || pod.metadata?.labels?.['job-name'] === jobName,
    );
  }

  /** Creates a Job as a client would (a Job "left by an earlier controller"). */
  createJob(namespace: string, job: V1Job): V1Job {
    return this.insertJob(namespace, clone(job) as V1Job);
  }

  /** Replaces a Job's status (a MODIFIED event); terminal conditions go on the timeline. */
  setJobStatus(namespace: string, name: string, status: V1JobStatus): void {
    const job = this.require('Job', namespace, name) as V1Job;
    job.status = status;
    this.emit('Job', 'MODIFIED', job);
    this.recordTerminal(job);
  }

  /** Adds a pod for a Job, as the Job controller would, with the given status. */
  addPod(namespace: string, jobName: string, status: V1PodStatus = { phase: 'Pending' }): V1Pod {
    const job = this.require('Job', namespace, jobName) as V1Job;
    const pod = this.podFor(job);
    pod.status = status;
    this.objects.Pod.set(`${namespace}/${pod.metadata!.name}`, pod);
    this.emit('Pod', 'ADDED', pod);
    return clone(pod) as V1Pod;
  }

  setPodStatus(namespace: string, name: string, status: V1PodStatus): void {
    const pod = this.require('Pod', namespace, name) as V1Pod;
    pod.status = status;
    this.emit('Pod', 'MODIFIED', pod);
  }

  /**
   * Forces "410 Gone": the event history is compacted to now, and every open watch gets an
   * ERROR event with code 410 ("too old resource version") and ends. A client that resumes
   * from the resourceVersion it had gets 410 again, and must list anew.
   */
  expireWatches(): void {
    this.compactedRv = this.rv;
    this.history = [];
    for (const watch of [...this.watches]) {
      this.writeEvent(watch.response, 'ERROR', this.gone(this.rv - 1));
      this.endWatch(watch);
    }
  }

  /** Drops every open watch connection without ending its response (as a broken network would). */
  dropWatches(): void {
    for (const watch of [...this.watches]) {
      this.watches.delete(watch);
      for (const timer of watch.timers) clearTimeout(timer);
      watch.response.socket?.destroy();
    }
  }

  get openWatches(): number {
    return this.watches.size;
  }

  // ---- HTTP -------------------------------------------------------------------------------

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://fake');
    const route =
      /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs(?:\/([^/]+))?$/.exec(url.pathname) ??
      /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+))?$/.exec(url.pathname);
    if (!route) {
      this.sendStatus(response, 404, 'NotFound', `the fake kube-apiserver does not serve ${url.pathname}`);
      return;
    }
    const kind: Kind = url.pathname.startsWith('/apis/batch/') ? 'Job' : 'Pod';
    const namespace = decodeURIComponent(route[1]!);
    const name = route[2] === undefined ? undefined : decodeURIComponent(route[2]);
    const body = await readBody(request);
    const query = url.searchParams;

    if (request.method === 'GET' && name === undefined) {
      const selector = parseSelector(query.get('labelSelector') ?? '');
      if (query.get('watch') === 'true' || query.get('watch') === '1') {
        this.watch(kind, namespace, selector, query, request, response);
        return;
      }
      this.listRequests[kind] += 1;
      const items = this.list(kind, namespace).filter((item) => matches(selector, item.metadata?.labels ?? {}));
      this.sendJson(response, 200, {
        apiVersion: kind === 'Job' ? 'batch/v1' : 'v1',
        kind: `${kind}List`,
        metadata: { resourceVersion: String(this.rv) },
        items,
      });
      return;
    }
    if (request.method === 'GET' && name !== undefined) {
      const object = this.objects[kind].get(`${namespace}/${name}`);
      if (!object) this.notFound(response, kind, name);
      else this.sendJson(response, 200, object);
      return;
    }
    if (request.method === 'POST' && name === undefined && kind === 'Job') {
      const job = JSON.parse(body || '{}') as V1Job;
      const jobName = job.metadata?.name;
      if (!jobName) {
        this.sendStatus(response, 422, 'Invalid', 'Job.batch is invalid: metadata.name: Required value');
        return;
      }
      if (this.objects.Job.has(`${namespace}/${jobName}`)) {
        this.sendStatus(response, 409, 'AlreadyExists', `jobs.batch "${jobName}" already exists`);
        return;
      }
      this.sendJson(response, 201, this.insertJob(namespace, job));
      return;
    }
    if (request.method === 'DELETE' && name !== undefined) {
      const object = this.objects[kind].get(`${namespace}/${name}`);
      if (!object) {
        this.notFound(response, kind, name);
        return;
      }
      const options = body ? (JSON.parse(body) as { propagationPolicy?: string }) : {};
      const propagationPolicy = query.get('propagationPolicy') ?? options.propagationPolicy;
      this.deletions.push({ kind, namespace, name, propagationPolicy });
      if (kind === 'Job') this.deleteJob(namespace, object as V1Job, propagationPolicy);
      else this.deletePod(namespace, object as V1Pod);
      this.sendJson(response, 200, {
        apiVersion: 'v1',
        kind: 'Status',
        metadata: {},
        status: 'Success',
        details: { name, group: kind === 'Job' ? 'batch' : '', kind: kind === 'Job' ? 'jobs' : 'pods' },
      });
      return;
    }
    this.sendStatus(
      response,
      405,
      'MethodNotAllowed',
      `the fake kube-apiserver does not ${request.method} ${url.pathname}`,
    );
  }

  private watch(
    kind: Kind,
    namespace: string,
    selector: Selector,
    query: URLSearchParams,
    request: IncomingMessage,
    response: ServerResponse,
  ): void {
    this.watchRequests[kind] += 1;
    response.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache' });
    response.flushHeaders();
    const since = query.get('resourceVersion') ?? '';
    if (since === '' || since === '0') {
      // No version: the current objects as ADDED, then changes (what a real server does).
      for (const item of this.list(kind, namespace)) {
        if (matches(selector, item.metadata?.labels ?? {})) this.writeEvent(response, 'ADDED', item);
      }
    } else if (Number(since) < this.compactedRv) {
      this.writeEvent(response, 'ERROR', this.gone(Number(since)));
      response.end();
      return;
    } else {
      for (const entry of this.history) {
        if (entry.rv > Number(since) && entry.kind === kind && entry.namespace === namespace) {
          if (matches(selector, entry.labels)) response.write(`{"type":"${entry.type}","object":${entry.json}}\n`);
        }
      }
    }
    const watch: OpenWatch = { kind, namespace, selector, response, timers: [] };
    this.watches.add(watch);
    const timeoutSeconds = Number(query.get('timeoutSeconds') ?? 0);
    if (timeoutSeconds > 0) watch.timers.push(setTimeout(() => this.endWatch(watch), timeoutSeconds * 1000));
    if (query.get('allowWatchBookmarks') === 'true') {
      const interval = setInterval(() => {
        this.writeEvent(response, 'BOOKMARK', {
          apiVersion: kind === 'Job' ? 'batch/v1' : 'v1',
          kind,
          metadata: { resourceVersion: String(this.rv) },
        });
      }, this.options.bookmarkIntervalMs ?? 10_000);
      watch.timers.push(interval);
    }
    request.on('close', () => {
      for (const timer of watch.timers) clearTimeout(timer);
      this.watches.delete(watch);
    });
  }

  private endWatch(watch: OpenWatch): void {
    for (const timer of watch.timers) clearTimeout(timer);
    this.watches.delete(watch);
    watch.response.end();
  }

  private gone(since: number) {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: `too old resource version: ${since} (${this.compactedRv})`,
      reason: 'Expired',
      code: 410,
    };
  }

  private writeEvent(response: ServerResponse, type: string, object: unknown): void {
    if (!response.writableEnded && !response.destroyed) response.write(`${JSON.stringify({ type, object })}\n`);
  }

  private sendJson(response: ServerResponse, code: number, value: unknown): void {
    response.writeHead(code, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify(value));
  }

  private sendStatus(response: ServerResponse, code: number, reason: string, message: string): void {
    this.sendJson(response, code, {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message,
      reason,
      code,
    });
  }

  private notFound(response: ServerResponse, kind: Kind, name: string): void {
    this.sendStatus(response, 404, 'NotFound', `${kind === 'Job' ? 'jobs.batch' : 'pods'} "${name}" not found`);
  }

  // ---- objects and events -----------------------------------------------------------------

  private list(kind: Kind, namespace: string): KubeObject[] {
    return [...this.objects[kind].values()]
      .filter((item) => item.metadata?.namespace === namespace)
      .map((item) => clone(item) as KubeObject);
  }

  private require(kind: Kind, namespace: string, name: string): KubeObject {
    const object = this.objects[kind].get(`${namespace}/${name}`);
    if (!object) throw new Error(`fake kube-apiserver: no ${kind} ${namespace}/${name}`);
    return object;
  }

  /** Bumps the resourceVersion, stamps it on the object, keeps the event and sends it to matching watches. */
  private emit(kind: Kind, type: EventType, object: KubeObject): void {
    this.rv += 1;
    object.metadata!.resourceVersion = String(this.rv);
    const json = JSON.stringify(object);
    const namespace = object.metadata!.namespace!;
    const labels = { ...object.metadata?.labels };
    this.history.push({ rv: this.rv, kind, namespace, type, labels, json });
    for (const watch of this.watches) {
      if (watch.kind === kind && watch.namespace === namespace && matches(watch.selector, labels)) {
        if (!watch.response.writableEnded && !watch.response.destroyed) {
          watch.response.write(`{"type":"${type}","object":${json}}\n`);
        }
      }
    }
  }

  private insertJob(namespace: string, job: V1Job): V1Job {
    const uid = randomUUID();
    job.apiVersion = 'batch/v1';
    job.kind = 'Job';
    job.metadata = { ...job.metadata, namespace, uid, generation: 1, creationTimestamp: new Date() };
    const template = job.spec!.template;
    template.metadata = {
      ...template.metadata,
      labels: { ...template.metadata?.labels, 'batch.kubernetes.io/controller-uid': uid, 'controller-uid': uid },
    };
    job.spec!.selector = { matchLabels: { 'batch.kubernetes.io/controller-uid': uid } };
    job.status = {};
    this.objects.Job.set(`${namespace}/${job.metadata.name}`, job);
    this.emit('Job', 'ADDED', job);
    this.record('created', job);
    return clone(job) as V1Job;
  }

  private deleteJob(namespace: string, job: V1Job, propagationPolicy: string | undefined): void {
    const name = job.metadata!.name!;
    this.objects.Job.delete(`${namespace}/${name}`);
    job.metadata!.deletionTimestamp = new Date();
    this.emit('Job', 'DELETED', job);
    this.record('deleted', job);
    // batch/v1 Jobs default to orphaning their pods: only Background and Foreground take them along.
    if (propagationPolicy === 'Background' || propagationPolicy === 'Foreground') {
      for (const pod of this.pods(namespace, name)) this.deletePod(namespace, pod);
    }
  }

  private deletePod(namespace: string, pod: V1Pod): void {
    const key = `${namespace}/${pod.metadata!.name}`;
    const stored = this.objects.Pod.get(key) as V1Pod | undefined;
    if (!stored || stored.metadata?.deletionTimestamp) return;
    stored.metadata!.deletionTimestamp = new Date();
    this.objects.Pod.delete(key);
    this.emit('Pod', 'DELETED', stored);
  }

  private record(event: JobTimelineEntry['event'], job: V1Job): void {
    this.timeline.push({
      at: Date.now(),
      event,
      namespace: job.metadata!.namespace!,
      name: job.metadata!.name!,
      labels: { ...job.metadata?.labels },
      annotations: { ...job.metadata?.annotations },
    });
  }

  private recordTerminal(job: V1Job): void {
    const conditions = job.status?.conditions ?? [];
    if (conditions.some((c) => c.type === 'Complete' && c.status === 'True')) this.record('succeeded', job);
    else if (conditions.some((c) => c.type === 'Failed' && c.status === 'True')) this.record('failed', job);
  }

  private podFor(job: V1Job): V1Pod {
    const jobName = job.metadata!.name!;
    const suffix = Array.from({ length: 5 }, () => SUFFIX_CHARS[Math.floor(Math.random() * SUFFIX_CHARS.length)]).join(
      '',
    );
    const template = clone(job.spec!.template) as NonNullable<V1Job['spec']>['template'];
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `${jobName}-${suffix}`,
        namespace: job.metadata!.namespace,
        uid: randomUUID(),
        creationTimestamp: new Date(),
        labels: { ...template.metadata?.labels, 'batch.kubernetes.io/job-name': jobName, 'job-name': jobName },
        annotations: { ...template.metadata?.annotations },
        ownerReferences: [
          {
            apiVersion: 'batch/v1',
            kind: 'Job',
            name: jobName,
            uid: job.metadata!.uid!,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: template.spec,
    };
  }
}

/** A label selector: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-separated. */
export function parseSelector(text: string): Selector {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const char of text) {
    if (char === '(') depth += 1;
    if (char === ')') depth -= 1;
    if (char === ',' && depth === 0) {
      parts.push(current);
      current = '';
    } else current += char;
  }
  parts.push(current);
  const selector: Selector = [];
  for (const raw of parts) {
    const part = raw.trim();
    if (!part) continue;
    let match: RegExpExecArray | null;
    if ((match = /^(\S+?)\s*(==|!=|=)\s*(\S*)$/.exec(part))) {
      selector.push({ key: match[1]!, op: match[2] === '!=' ? 'notin' : 'in', values: [match[3]!] });
    } else if ((match = /^(\S+)\s+(in|notin)\s+\((.*)\)$/.exec(part))) {
      const values = match[3]!.split(',').map((value) => value.trim());
      selector.push({ key: match[1]!, op: match[2] as 'in' | 'notin', values });
    } else if ((match = /^!(\S+)$/.exec(part))) {
      selector.push({ key: match[1]!, op: 'absent' });
    } else {
      selector.push({ key: part, op: 'exists' });
    }
  }
  return selector;
}

function matches(selector: Selector, labels: Record<string, string>): boolean {
  return selector.every((requirement) => {
    const value = labels[requirement.key];
    switch (requirement.op) {
      case 'in':
        return value !== undefined && requirement.values.includes(value);
      case 'notin':
        return value === undefined || !requirement.values.includes(value);
      case 'exists':
        return value !== undefined;
      case 'absent':
        return value === undefined;
    }
  });
}

function clone<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
