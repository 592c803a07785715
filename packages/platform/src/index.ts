export * from './object-store.ts';
export { LocalFolderStore } from './local-folder-store.ts';
export { createLogger, type Logger } from './logger.ts';
