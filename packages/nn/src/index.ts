export * from './backend.ts';
export * from './checkpoint.ts';
export * from './evaluate.ts';
export * from './layers.ts';
export * from './nets.ts';

export * from './seeds.ts';
export * from './train.ts';
export * from './transplant.ts';
export * from './activations.ts';
export * from './prefix-cache.ts';
