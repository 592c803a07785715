export * from './spec.ts';
export * from './canonical.ts';
export * from './cells.ts';
export * from './grid.ts';
export * from './stats.ts';
export * from './aggregate.ts';
export * from './figures.ts';
export * from './report.ts';
