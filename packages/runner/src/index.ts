export * from './cell-store.ts';
export * from './dag.ts';
export * from './local-sweep.ts';
export * from './prepare-split.ts';
export * from './run-cell.ts';
export * from './worker-pool.ts';
