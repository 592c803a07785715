import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractTar, readMaybeGzip, readTarEntries, safeEntryName, writeTar } from './archive.ts';
import { DataError } from './errors.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transferlab-archive-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

async function caught(promise: Promise<unknown>): Promise<DataError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DataError);
  return error as DataError;
}

describe('readTarEntries', () => {
  for (const gzip of [false, true]) {
    it(`streams entries of a ${gzip ? '.tar.gz' : '.tar'} in order, normalising names`, async () => {
      const archive = join(dir, gzip ? 'a.tgz' : 'a.tar');
      await writeTar(
        archive,
        [
          { name: './top/' },
          { name: './top/a.txt', data: 'alpha' },
          { name: 'top/sub/b.bin', data: new Uint8Array([1, 2, 3]) },
        ],
        { gzip },
      );
      const seen: string[] = [];
      await readTarEntries(archive, async (entry) => {
        seen.push(`${entry.type}:${entry.name}:${entry.size}`);
        if (entry.name === 'top/a.txt') expect((await entry.read()).toString()).toBe('alpha');
      });
      expect(seen).toEqual(['directory:top:0', 'file:top/a.txt:5', 'file:top/sub/b.bin:3']);
    });
  }

  it('refuses entries with .. or absolute paths, naming the entry', async () => {
    for (const name of ['../evil.txt', 'ok/../../evil.txt', '/etc/evil.txt']) {
      const archive = join(dir, 'bad.tar.gz');
      await writeTar(
        archive,
        [
          { name: 'fine.txt', data: 'x' },
          { name, data: 'boom' },
        ],
        { gzip: true },
      );
      const error = await caught(readTarEntries(archive, () => {}));
      expect(error.entry).toBe(name);
      expect(error.file).toBe(archive);
      expect(error.message).toContain(archive);
      expect(error.message).toContain(name);
    }
  });

  it('reports a truncated archive naming the archive', async () => {
    const archive = join(dir, 'whole.tar.gz');
    await writeTar(archive, [{ name: 'a.bin', data: new Uint8Array(100_000).fill(7) }], { gzip: true });
    const bytes = await readFile(archive);
    const cut = join(dir, 'cut.tar.gz');
    await writeFile(cut, bytes.subarray(0, bytes.length >> 1));
    const error = await caught(readTarEntries(cut, async (entry) => void (await entry.read())));
    expect(error.message).toContain(cut);
    expect(error.message).toMatch(/corrupt or truncated/);
  });

  it('skips entries the handler does not read', async () => {
    const archive = join(dir, 'a.tar');
    await writeTar(archive, [
      { name: 'a', data: 'aaaa' },
      { name: 'b', data: 'bbbb' },
    ]);
    const read: string[] = [];
    await readTarEntries(archive, async (entry) => {
      if (entry.name === 'b') read.push((await entry.read()).toString());
    });
    expect(read).toEqual(['bbbb']);
  });
});

describe('safeEntryName', () => {
  it('normalises harmless names and refuses escaping ones', () => {
    expect(safeEntryName('x.tar', './a//b/./c')).toBe('a/b/c');
    expect(safeEntryName('x.tar', './')).toBe('');
    expect(() => safeEntryName('x.tar', 'a\\..\\..\\b')).toThrow(DataError);
    expect(() => safeEntryName('x.tar', 'C:/windows')).toThrow(DataError);
  });
});

describe('extractTar', () => {
  it('extracts files and folders into the target', async () => {
    const archive = join(dir, 'a.tar.gz');
    await writeTar(archive, [{ name: 'd/' }, { name: 'd/x.txt', data: 'hello' }, { name: 'y.txt', data: 'y' }], {
      gzip: true,
    });
    const target = join(dir, 'out', 'target');
    await extractTar(archive, target);
    expect(await readFile(join(target, 'd', 'x.txt'), 'utf8')).toBe('hello');
    expect(await readFile(join(target, 'y.txt'), 'utf8')).toBe('y');
    expect((await readdir(join(dir, 'out'))).sort()).toEqual(['target']);
  });

  it('refuses an archive with an escaping entry before writing anything', async () => {
    const archive = join(dir, 'evil.tar');
    await writeTar(archive, [
      { name: 'good.txt', data: 'fine' },
      { name: '../escaped.txt', data: 'boom' },
    ]);
    const parent = join(dir, 'parent');
    const target = join(parent, 'target');
    const error = await caught(extractTar(archive, target));
    expect(error.entry).toBe('../escaped.txt');
    expect(error.message).toContain('../escaped.txt');
    expect(await exists(target)).toBe(false);
    expect(await exists(join(parent, 'escaped.txt'))).toBe(false);
    expect(await exists(join(dir, 'escaped.txt'))).toBe(false);
    expect(await exists(join(parent, 'good.txt'))).toBe(false);
    // Nothing at all, not even a temporary folder.
    expect(await exists(parent)).toBe(false);
  });

  it('leaves neither target nor temporary folder when the archive is truncated', async () => {
    const whole = join(dir, 'whole.tar');
    await writeTar(whole, [
      { name: 'a.bin', data: new Uint8Array(10_000).fill(1) },
      { name: 'b.bin', data: new Uint8Array(10_000).fill(2) },
    ]);
    const cut = join(dir, 'cut.tar');
    await writeFile(cut, (await readFile(whole)).subarray(0, 15_000));
    const out = join(dir, 'out');
    const error = await caught(extractTar(cut, join(out, 'target')));
    expect(error.message).toContain(cut);
    expect(await exists(join(out, 'target'))).toBe(false);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });

  it('refuses to overwrite an existing target unless asked to replace it', async () => {
    const archive = join(dir, 'a.tar');
    await writeTar(archive, [{ name: 'new.txt', data: 'new' }]);
    const target = join(dir, 'target');
    await extractTar(archive, target);
    await expect(extractTar(archive, target)).rejects.toThrow(/already exists/);
    await writeFile(join(target, 'stale.txt'), 'old');
    await extractTar(archive, target, { replace: true });
    expect(await readdir(target)).toEqual(['new.txt']);
  });
});

describe('readMaybeGzip', () => {
  it('detects gzip by magic, not by name', async () => {
    const plain = join(dir, 'plain.gz');
    const packed = join(dir, 'packed.bin');
    await writeFile(plain, 'just text');
    await writeFile(packed, gzipSync(Buffer.from('was gzipped')));
    expect((await readMaybeGzip(plain)).toString()).toBe('just text');
    expect((await readMaybeGzip(packed)).toString()).toBe('was gzipped');
  });

  it('names the file when gzip data is truncated', async () => {
    const file = join(dir, 'cut.gz');
    const gz = gzipSync(Buffer.alloc(50_000, 3));
    await writeFile(file, gz.subarray(0, gz.length - 10));
    const error = await caught(readMaybeGzip(file));
    expect(error.file).toBe(file);
    expect(error.message).toContain(file);
  });
});
