/**
 * Bounds on what one sweep spec may ask for, so that one request cannot stall or exhaust a
 * controller (issue 9: `repeats: 1000000` blocked its event loop for 61 s and took it to
 * 865 MB). Constants only, so that the schema can use them at load time.
 */
export const SPEC_LIMITS = {
  /** Seeds per cell. The paper averaged a handful; 100 leaves ample room. */
  maxRepeats: 100,
  /** Cells one sweep may expand to, checked before expansion. The demo has 60, the paper's grid 7 layers x 6 arms. */
  maxCells: 5000,
  /** Alias expansions a YAML spec may make (a billion-laughs document makes billions). */
  maxYamlAliases: 100,
} as const;
