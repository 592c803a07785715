import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isScalar, parseDocument } from 'yaml';

/** The spec fields that name files, relative to the spec file when not absolute. */
const PATH_FIELDS: readonly (readonly string[])[] = [
  ['dataset', 'path'],
  ['dataset', 'trainImages'],
  ['dataset', 'trainLabels'],
  ['dataset', 'testImages'],
  ['dataset', 'testLabels'],
  ['split', 'groupsFile'],
];

const URL_LIKE = /^[a-z][a-z0-9+.-]*:\/\//i;

export interface RewrittenPath {
  field: string;
  from: string;
  to: string;
}

/**
 * The spec text with every relative file path made absolute against `specDir`, so that a
 * controller (on this machine, or one that shares its file system) reads the same files the
 * spec names here. Only those values change, in place: every other byte stays, so the
 * server's `file:line:col` messages point at the file as written. Text that does not parse is
 * returned as it is, for the server to report.
 */
export function absolutizeSpecPaths(text: string, specDir: string): { text: string; rewritten: RewrittenPath[] } {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return { text, rewritten: [] };
  const edits: { start: number; end: number; field: string; from: string; to: string }[] = [];
  for (const path of PATH_FIELDS) {
    const node = doc.getIn(path, true);
    if (!isScalar(node) || typeof node.value !== 'string' || !node.range) continue;
    if (!['PLAIN', 'QUOTE_DOUBLE', 'QUOTE_SINGLE'].includes(node.type ?? '')) continue;
    const value = node.value;
    if (value === '' || isAbsolute(value) || URL_LIKE.test(value)) continue;
    edits.push({
      start: node.range[0],
      end: node.range[1],
      field: path.join('.'),
      from: value,
      to: resolve(specDir, value),
    });
  }
  let out = text;
  // From the end, so earlier offsets stay valid. A JSON string is a valid YAML scalar too.
  for (const edit of [...edits].sort((a, b) => b.start - a.start)) {
    out = out.slice(0, edit.start) + JSON.stringify(edit.to) + out.slice(edit.end);
  }
  return { text: out, rewritten: edits.map(({ field, from, to }) => ({ field, from, to })) };
}

/** Reads a spec file for StartSweep: its text with absolute paths, and the name to show in messages. */
export async function readSpecForServer(
  file: string,
): Promise<{ text: string; specFile: string; rewritten: RewrittenPath[] }> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read the sweep spec ${path}: ${(error as Error).message}`, { cause: error });
  }
  return { ...absolutizeSpecPaths(text, dirname(path)), specFile: file };
}

/**
 * The spec text with `measures.only: true` set (and `measures` added when absent): what
 * `sweep start --only-measures` sends. The document is re-serialised, so a server message's
 * line numbers may not match the file; everything else the spec says stays.
 */
export function onlyMeasuresText(text: string): string {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return text;
  doc.setIn(['measures', 'only'], true);
  return doc.toString();
}
