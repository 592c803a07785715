import { readFileSync } from 'node:fs';
import type { Bus } from './bus.ts';
import { createInProcessBus } from './in-process-bus.ts';
import { LocalFolderStore } from './local-folder-store.ts';
import { connectNatsBus } from './nats-bus.ts';
import type { ObjectStore } from './object-store.ts';
import { S3Store, s3StoreOptionsFromEnv } from './s3-store.ts';

/**
 * The object store a process uses: S3 when TRANSFERLAB_S3_ENDPOINT is set (the cluster), else
 * the local folder TRANSFERLAB_STORE (one machine). Read once at start-up.
 */
export function openStore(env: NodeJS.ProcessEnv = process.env): ObjectStore {
  if (env.TRANSFERLAB_S3_ENDPOINT) return new S3Store(s3StoreOptionsFromEnv(env));
  return new LocalFolderStore(env.TRANSFERLAB_STORE ?? '.transferlab/store');
}

/**
 * The bus: NATS JetStream at TRANSFERLAB_NATS_URL (logging in as TRANSFERLAB_NATS_USER with
 * TRANSFERLAB_NATS_PASSWORD, or the first line of the file TRANSFERLAB_NATS_PASSWORD_FILE, when
 * set), else in-process (useful only inside one process).
 */
export async function openBus(name: string, env: NodeJS.ProcessEnv = process.env): Promise<Bus> {
  if (env.TRANSFERLAB_NATS_URL) {
    return connectNatsBus({
      servers: env.TRANSFERLAB_NATS_URL.split(','),
      name,
      waitOnFirstConnect: true,
      ...(env.TRANSFERLAB_NATS_USER ? { user: env.TRANSFERLAB_NATS_USER, pass: natsPassword(env) } : {}),
    });
  }
  return createInProcessBus();
}

function natsPassword(env: NodeJS.ProcessEnv): string {
  const file = env.TRANSFERLAB_NATS_PASSWORD_FILE;
  if (!file) return env.TRANSFERLAB_NATS_PASSWORD ?? '';
  if (env.TRANSFERLAB_NATS_PASSWORD) {
    throw new Error(
      'invalid configuration:\n  TRANSFERLAB_NATS_PASSWORD and TRANSFERLAB_NATS_PASSWORD_FILE: set one, not both',
    );
  }
  try {
    return readFileSync(file, 'utf8').split('\n')[0]!.trimEnd();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new Error(`TRANSFERLAB_NATS_PASSWORD_FILE: cannot read ${file} (${code})`);
  }
}
