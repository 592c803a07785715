import * as z from 'zod';

/**
 * Reads a service's configuration from TRANSFERLAB_* environment variables once, at start-up,
 * against a schema. Keys are camelCase in the schema and UPPER_SNAKE in the environment:
 * `natsUrl` ← TRANSFERLAB_NATS_URL. An error names every bad variable and why.
 */
export function loadConfig<T extends z.ZodRawShape>(
  shape: T,
  env: NodeJS.ProcessEnv = process.env,
  overrides: Record<string, unknown> = {},
): z.output<z.ZodObject<T>> {
  const variable = (key: string): string => `TRANSFERLAB_${key.replace(/([A-Z])/g, '_$1').toUpperCase()}`;
  const raw: Record<string, unknown> = {};
  for (const key of Object.keys(shape)) {
    const value = overrides[key] ?? env[variable(key)];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  const parsed = z.object(shape).safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '');
      return `${variable(key)}: ${issue.message}`;
    });
    throw new Error(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  return parsed.data;
}

/** A TCP port from the environment (a string) as a number. */
export const portSchema = z.coerce.number().int().min(0).max(65535);
