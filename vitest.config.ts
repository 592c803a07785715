import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/src/**/*.test.ts', 'services/*/src/**/*.test.ts', 'test/**/*.test.ts'],
    // forks, not threads: tfjs-wasm and sharp keep process-wide state.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
