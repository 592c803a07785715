export interface DataErrorDetails {
  /** Byte offset in the (decompressed) file where the problem was found. */
  offset?: number;
  /** Entry inside an archive, when `file` is an archive. */
  entry?: string;
  cause?: unknown;
}

/**
 * Bad or unreadable input data. The message always starts with the file (and archive entry),
 * so a user can find the culprit without a stack trace.
 */
export class DataError extends Error {
  override readonly name = 'DataError';
  readonly file: string;
  readonly offset?: number;
  readonly entry?: string;
  /** The problem alone, without the location prefix. */
  readonly problem: string;

  constructor(file: string, problem: string, details: DataErrorDetails = {}) {
    super(formatMessage(file, problem, details), details.cause === undefined ? undefined : { cause: details.cause });
    this.file = file;
    this.problem = problem;
    if (details.offset !== undefined) this.offset = details.offset;
    if (details.entry !== undefined) this.entry = details.entry;
  }
}

function formatMessage(file: string, problem: string, details: DataErrorDetails): string {
  let where = file;
  if (details.entry !== undefined) where += ` (entry ${details.entry})`;
  if (details.offset !== undefined) where += ` at byte ${details.offset}`;
  return `${where}: ${problem}`;
}

export function isDataError(error: unknown): error is DataError {
  return error instanceof DataError;
}

/** The message of an unknown thrown value, for wrapping low-level errors into a DataError. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
