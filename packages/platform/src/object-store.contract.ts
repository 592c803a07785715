import { describe, expect, it } from 'vitest';
import { type ObjectStore, ObjectNotFoundError } from './object-store.ts';

/**
 * The behaviour every object-store adapter must have. Each adapter's test file calls this
 * with a factory that returns an empty store.
 */
export function describeObjectStoreContract(name: string, makeStore: () => Promise<ObjectStore>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    it('puts and gets bytes with metadata', async () => {
      const store = await makeStore();
      const bytes = new Uint8Array([0, 1, 2, 255]);
      await store.put('cells/abc/result.json', bytes, { metadata: { sha256: 'f00' } });
      expect(new Uint8Array(await store.get('cells/abc/result.json'))).toEqual(bytes);
      const stat = await store.stat('cells/abc/result.json');
      expect(stat?.size).toBe(4);
      expect(stat?.metadata.sha256).toBe('f00');
    });

    it('replaces an object and drops its old metadata', async () => {
      const store = await makeStore();
      await store.put('a/b', new Uint8Array([1]), { metadata: { sha256: 'x' } });
      await store.put('a/b', new Uint8Array([2, 3]));
      expect([...(await store.get('a/b'))]).toEqual([2, 3]);
      expect((await store.stat('a/b'))?.metadata.sha256).toBeUndefined();
    });

    it('reports a missing object by key', async () => {
      const store = await makeStore();
      await expect(store.get('splits/nope/manifest.json')).rejects.toBeInstanceOf(ObjectNotFoundError);
      await expect(store.get('splits/nope/manifest.json')).rejects.toThrow(/splits\/nope\/manifest.json/);
      expect(await store.stat('splits/nope/manifest.json')).toBeUndefined();
    });

    it('lists keys under a prefix, sorted, and deletes', async () => {
      const store = await makeStore();
      for (const key of ['s/2/x', 's/1/y', 's/1/x', 't/1']) await store.put(key, new Uint8Array([1]));
      expect(await store.list('s/')).toEqual(['s/1/x', 's/1/y', 's/2/x']);
      await store.delete('s/1/x');
      expect(await store.list('s/1/')).toEqual(['s/1/y']);
      await store.delete('s/1/never-there');
    });

    it('refuses keys that could escape the store', async () => {
      const store = await makeStore();
      for (const key of ['../x', '/etc/passwd', 'a/../../b', 'a//b', '']) {
        await expect(store.put(key, new Uint8Array([1]))).rejects.toThrow(/invalid object key/);
      }
    });
  });
}
