import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/node_modules/**', '.transferlab/**', 'runs/**', 'packages/proto/src/gen/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // The experiment package is pure logic: the lint keeps adapters and I/O out of it.
    files: ['packages/experiment/src/**/*.ts'],
    ignores: ['packages/experiment/src/**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@tensorflow/*'], message: 'packages/experiment is pure logic: no TensorFlow.js.' },
            {
              group: ['@grpc/*', 'nats', '@nats-io/*', 'minio'],
              message: 'packages/experiment is pure logic: no adapters.',
            },
            {
              group: ['@transferlab/platform', '@transferlab/nn', '@transferlab/data'],
              message: 'packages/experiment imports no other package.',
            },
            {
              group: ['node:fs', 'node:fs/*', 'fs', 'node:net', 'node:http', 'node:child_process'],
              message: 'packages/experiment does no I/O.',
            },
          ],
        },
      ],
    },
  },
);
