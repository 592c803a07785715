/**
 * The names on the bus: subjects, streams and key-value buckets, and the rules every name
 * must follow (NATS's, which the in-process bus enforces too).
 *
 * | name                                            | kind                      | written by        | read by                  | payload (JSON)              |
 * |-------------------------------------------------|---------------------------|-------------------|--------------------------|-----------------------------|
 * | `transferlab.cell.progress.<sweepId>.<cellId>`  | event, TRANSFERLAB_EVENTS | trainer           | controller, `sweep watch`| epoch, step, loss, val top-1, images/s |
 * | `transferlab.cell.finished.<sweepId>.<cellId>`  | event, TRANSFERLAB_EVENTS | trainer           | observers                | outcome (succeeded/failed), checkpoint ref |
 * | `transferlab.evaluation.finished.<sweepId>.<cellId>` | event, TRANSFERLAB_EVENTS | evaluator    | observers (the controller uses Evaluate's reply) | top-1/top-5, per class      |
 * | `transferlab.sweep.event.<sweepId>`             | event, TRANSFERLAB_EVENTS | controller        | WatchSweep streams, CLI  | sweep/cell state changes    |
 * | KV `transferlab-sweeps`, key `sweep.<sweepId>`  | KV bucket                 | controller        | controller (on restart)  | the sweep: spec, state      |
 * | KV `transferlab-sweeps`, key `cell.<sweepId>.<cellId>` | KV bucket          | controller        | controller               | one cell's state, attempts  |
 *
 * Streams:
 * - `TRANSFERLAB_EVENTS` captures `transferlab.>`: limits retention (messages stay until their
 *   max age, 7 days by default, whoever read them), file storage, a 2-minute dedupe window.
 * - KV bucket `<bucket>` is the stream `KV_<bucket>` over `$KV.<bucket>.>` (NATS's layout).
 *
 * Ids inside subjects and keys (sweep ids, cell ids) are single tokens: [-_=A-Za-z0-9]+.
 */

export const SUBJECT_ROOT = 'transferlab';
export const EVENTS_STREAM = 'TRANSFERLAB_EVENTS';
export const EVENTS_SUBJECTS = `${SUBJECT_ROOT}.>`;

/** The bucket holding each sweep's state: the controller keeps none of its own. */
export const SWEEPS_BUCKET = 'transferlab-sweeps';

// ------------------------------------------------------------------ subjects and keys

export function cellProgressSubject(sweepId: string, cellId: string): string {
  return `${SUBJECT_ROOT}.cell.progress.${token(sweepId, 'sweep id')}.${token(cellId, 'cell id')}`;
}

export function cellFinishedSubject(sweepId: string, cellId: string): string {
  return `${SUBJECT_ROOT}.cell.finished.${token(sweepId, 'sweep id')}.${token(cellId, 'cell id')}`;
}

export function evaluationFinishedSubject(sweepId: string, cellId: string): string {
  return `${SUBJECT_ROOT}.evaluation.finished.${token(sweepId, 'sweep id')}.${token(cellId, 'cell id')}`;
}

export function sweepEventSubject(sweepId: string): string {
  return `${SUBJECT_ROOT}.sweep.event.${token(sweepId, 'sweep id')}`;
}

/** Progress of every cell of one sweep, or of all sweeps. */
export function cellProgressFilter(sweepId?: string): string {
  return sweepId === undefined
    ? `${SUBJECT_ROOT}.cell.progress.>`
    : `${SUBJECT_ROOT}.cell.progress.${token(sweepId, 'sweep id')}.*`;
}

export function cellFinishedFilter(sweepId?: string): string {
  return sweepId === undefined
    ? `${SUBJECT_ROOT}.cell.finished.>`
    : `${SUBJECT_ROOT}.cell.finished.${token(sweepId, 'sweep id')}.*`;
}

export function evaluationFinishedFilter(sweepId?: string): string {
  return sweepId === undefined
    ? `${SUBJECT_ROOT}.evaluation.finished.>`
    : `${SUBJECT_ROOT}.evaluation.finished.${token(sweepId, 'sweep id')}.*`;
}

export function sweepEventFilter(sweepId?: string): string {
  return sweepId === undefined ? `${SUBJECT_ROOT}.sweep.event.*` : sweepEventSubject(sweepId);
}

export function sweepKey(sweepId: string): string {
  return `sweep.${token(sweepId, 'sweep id')}`;
}

export function cellKey(sweepId: string, cellId: string): string {
  return `cell.${token(sweepId, 'sweep id')}.${token(cellId, 'cell id')}`;
}

/** Prefix of every sweep key, for `keys()` and `watch()`. */
export const SWEEP_KEY_PREFIX = 'sweep.';

/** Prefix of the cell keys of one sweep, for `keys()` and `watch()`. */
export function cellKeyPrefix(sweepId: string): string {
  return `cell.${token(sweepId, 'sweep id')}.`;
}

// ------------------------------------------------------------------ naming rules

const TOKEN = /^[-_=A-Za-z0-9]+$/;
const SUBJECT_TOKEN = /^[^\s.*>]+$/;
const KV_KEY = /^[-/_=.a-zA-Z0-9]+$/;
const BUCKET = /^[-_a-zA-Z0-9]+$/;
const CONSUMER = /^[-_A-Za-z0-9]+$/;

/** Longer ids are refused: file names, keys and subjects all have bounds, and no id of ours comes near. */
export const MAX_TOKEN_LENGTH = 256;

/** An id used as one token of a subject or key. The message starts with `what`, the field. */
export function token(value: string, what: string): string {
  if (!TOKEN.test(value) || value.length > MAX_TOKEN_LENGTH) {
    const shown = value.length > 80 ? `${value.slice(0, 80)}… (${value.length} characters)` : value;
    throw new Error(
      `${what}: '${shown}' is not an id: ids in subjects and keys are [-_=A-Za-z0-9]+, at most ${MAX_TOKEN_LENGTH} characters`,
    );
  }
  return value;
}

/** A subject to publish to: '.'-separated non-empty tokens, no wildcards or whitespace. */
export function assertSubject(subject: string): void {
  if (!subject.split('.').every((part) => SUBJECT_TOKEN.test(part))) {
    throw new Error(`invalid subject '${subject}': '.'-separated non-empty tokens without wildcards or whitespace`);
  }
}

/** A subject filter: like a subject, where a token may be `*` (one token) and the last may be `>` (the rest). */
export function assertSubjectFilter(filter: string): void {
  const parts = filter.split('.');
  const ok = parts.every(
    (part, i) => SUBJECT_TOKEN.test(part) || part === '*' || (part === '>' && i === parts.length - 1),
  );
  if (!ok) throw new Error(`invalid subject filter '${filter}': tokens, '*' for one token, a final '>' for the rest`);
}

/** Whether a subject matches a filter, with NATS's wildcard rules. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const s = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i;
    if (i >= s.length || (f[i] !== '*' && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}

/** Whether every subject `inner` matches is also matched by `outer`. */
export function filterContains(outer: string, inner: string): boolean {
  const o = outer.split('.');
  const n = inner.split('.');
  for (let i = 0; i < o.length; i++) {
    if (o[i] === '>') return n.length > i;
    if (i >= n.length) return false;
    if (o[i] === '*') {
      if (n[i] === '>') return false;
    } else if (o[i] !== n[i]) return false;
  }
  return o.length === n.length;
}

export function assertKvKey(key: string): void {
  if (!KV_KEY.test(key) || key.startsWith('.') || key.endsWith('.') || key.includes('..')) {
    throw new Error(
      `invalid key '${key}': [-/_=.a-zA-Z0-9]+, not starting or ending with '.', no empty '.'-separated parts`,
    );
  }
}

/** A key prefix: the characters of a key, possibly ending with '.'. */
export function assertKvPrefix(prefix: string): void {
  if (prefix === '') return;
  if (!KV_KEY.test(prefix) || prefix.startsWith('.') || prefix.includes('..')) {
    throw new Error(`invalid key prefix '${prefix}': [-/_=.a-zA-Z0-9]+, not starting with '.', no '..'`);
  }
}

/**
 * The widest subject filter (relative to the bucket) that covers every key starting with a
 * prefix: `cell.s1.` -> `cell.s1.>`, `cell.s1` -> `cell.>`, `` -> `>`. Callers filter the
 * rest by `startsWith`.
 */
export function kvPrefixFilter(prefix: string): string {
  const dot = prefix.lastIndexOf('.');
  return dot < 0 ? '>' : `${prefix.slice(0, dot)}.>`;
}

export function assertBucketName(bucket: string): void {
  if (!BUCKET.test(bucket)) throw new Error(`invalid bucket name '${bucket}': [-_a-zA-Z0-9]+`);
}

export function assertConsumerName(name: string): void {
  if (!CONSUMER.test(name)) throw new Error(`invalid durable name '${name}': [-_A-Za-z0-9]+`);
}
