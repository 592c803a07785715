import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { LocalFolderStore } from './local-folder-store.ts';
import { describeObjectStoreContract } from './object-store.contract.ts';

describeObjectStoreContract(
  'local folder',
  async () => new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-store-'))),
);

it('leaves no temporary file behind when a write fails', async () => {
  const root = await mkdtemp(join(tmpdir(), 'tl-store-'));
  const store = new LocalFolderStore(root);
  await store.put('cells/x/a.bin', new Uint8Array([1]));
  // A directory where the object should go makes the final rename fail.
  await store.put('cells/x/dir/inner', new Uint8Array([1]));
  await expect(store.put('cells/x/dir', new Uint8Array([2]))).rejects.toThrow();
  expect((await readdir(join(root, 'cells', 'x'))).sort()).toEqual(['a.bin', 'dir']);
});
