export * from './object-store.ts';
export { LocalFolderStore } from './local-folder-store.ts';
