/** Where a cell's artefacts live in the object store. One folder per cell id. */
export const cellKeys = {
  prefix: (cellId: string): string => `cells/${cellId}`,
  /** The training checkpoint, overwritten as training goes; resumed from after a stop. */
  checkpoint: (cellId: string): string => `cells/${cellId}/checkpoint`,
  /** The trained net; what a transfer cell copies its first n layers from. */
  final: (cellId: string): string => `cells/${cellId}/final`,
  /** Written last: its presence means the cell is finished. */
  result: (cellId: string): string => `cells/${cellId}/result.json`,
  cell: (cellId: string): string => `cells/${cellId}/cell.json`,
};
