import { type Document, type LineCounter, isAlias, visit } from 'yaml';
import { SPEC_LIMITS } from './limits.ts';
import { SpecError, type SweepSpec } from './spec.ts';

/** Refuses a spec whose grid is larger than SPEC_LIMITS.maxCells, before anything is expanded. */
export function checkGridLimits(spec: SweepSpec, cells: number, file = '<spec>'): void {
  if (cells <= SPEC_LIMITS.maxCells) return;
  const perSeed = cells / spec.repeats;
  throw new SpecError(file, [
    {
      path: spec.repeats > 1 ? 'repeats' : 'layers',
      message:
        `the grid has ${cells} cells (${spec.repeats} repeat(s) x ${perSeed} cells each); ` +
        `a sweep may have at most ${SPEC_LIMITS.maxCells}: split it into smaller sweeps`,
    },
  ]);
}

/**
 * The document as plain values, with YAML's alias limit as a SpecError on a line: the parser
 * throws a bare ReferenceError when a document expands its aliases too often (billion laughs),
 * which a server would report as INTERNAL with no position.
 */
export function yamlToJs(doc: Document, file: string, lineCounter: LineCounter): unknown {
  try {
    return doc.toJS({ maxAliasCount: SPEC_LIMITS.maxYamlAliases });
  } catch (error) {
    if (!(error instanceof ReferenceError) || !/alias/i.test(error.message)) throw error;
    // The last alias of the document is where the expansion is deepest.
    let offset: number | undefined;
    visit(doc, {
      Alias(_key, node) {
        if (isAlias(node) && node.range) offset = node.range[0];
      },
    });
    const position = offset === undefined ? undefined : lineCounter.linePos(offset);
    throw new SpecError(file, [
      {
        path: '',
        message: `the YAML aliases expand more than ${SPEC_LIMITS.maxYamlAliases} times: refusing a possible alias bomb`,
        ...(position ? { line: position.line, col: position.col } : {}),
      },
    ]);
  }
}
