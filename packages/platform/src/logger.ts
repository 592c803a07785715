import { destination as pinoDestination, pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs. Interactive commands keep stderr for progress bars, so they pass
 * a destination file; services log to stderr.
 */
export function createLogger(name: string, options: { level?: string; destination?: string } = {}): Logger {
  const level = options.level ?? process.env.TRANSFERLAB_LOG_LEVEL ?? 'info';
  const destination = options.destination
    ? pinoDestination({ dest: options.destination, mkdir: true, sync: true })
    : pinoDestination(2);
  return pino({ name, level, base: { service: name } }, destination);
}
