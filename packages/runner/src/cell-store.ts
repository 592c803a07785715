import type { ObjectStore } from '@transferlab/platform';

/** Where a cell's artefacts live in the object store. One folder per cell id. */
export const cellKeys = {
  prefix: (cellId: string): string => `cells/${cellId}`,
  /** The net a transfer or random cell starts from (written by the transplant step). */
  initial: (cellId: string): string => `cells/${cellId}/initial`,
  /** The training checkpoint, overwritten as training goes; resumed from after a stop. */
  checkpoint: (cellId: string): string => `cells/${cellId}/checkpoint`,
  /** The trained net; what a transfer cell copies its first n layers from. */
  final: (cellId: string): string => `cells/${cellId}/final`,
  /** How training went (history, stop reason, throughput); written with `final`. */
  training: (cellId: string): string => `cells/${cellId}/training.json`,
  /** Written last: its presence means the cell is finished. */
  result: (cellId: string): string => `cells/${cellId}/result.json`,
  cell: (cellId: string): string => `cells/${cellId}/cell.json`,
};

export async function getJson<T>(store: ObjectStore, key: string): Promise<T | undefined> {
  if (!(await store.stat(key))) return undefined;
  return JSON.parse((await store.get(key)).toString('utf8')) as T;
}

export async function putJson(store: ObjectStore, key: string, value: unknown): Promise<void> {
  await store.put(key, new TextEncoder().encode(JSON.stringify(value, null, 2)));
}
