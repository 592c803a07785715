import { describe, expect, it } from 'vitest';
import { type SweepSpecInput, expandGrid, parseSpec, validateSpec } from '@transferlab/experiment';
import { parse } from 'yaml';
import { absolutizeSpecPaths, onlyMeasuresText } from './sweep-spec.ts';

describe('absolutizeSpecPaths', () => {
  it('makes relative dataset paths absolute in place, leaving every other byte and line as it was', () => {
    const text = [
      'name: paths  # a comment',
      'dataset:',
      '  kind: idx',
      '  trainImages: data/train-images.gz',
      "  trainLabels: 'data/train labels.gz'",
      '  testImages: /abs/t10k-images.gz',
      '  testLabels: https://example.org/t10k-labels.gz',
      'training: { maxEpochs: 2 }',
      '',
    ].join('\n');
    const { text: out, rewritten } = absolutizeSpecPaths(text, '/specs');
    expect(rewritten.map((r) => [r.field, r.to])).toEqual([
      ['dataset.trainImages', '/specs/data/train-images.gz'],
      ['dataset.trainLabels', '/specs/data/train labels.gz'],
    ]);
    const lines = out.split('\n');
    expect(lines).toHaveLength(text.split('\n').length);
    expect(lines[0]).toBe('name: paths  # a comment');
    expect(lines[3]).toBe('  trainImages: "/specs/data/train-images.gz"');
    expect(lines[5]).toBe('  testImages: /abs/t10k-images.gz');
    const spec = parseSpec(out, 'x.yaml');
    expect(spec.dataset).toMatchObject({ trainLabels: '/specs/data/train labels.gz' });
  });

  it('works on JSON specs and leaves text that does not parse to the server', () => {
    const json = '{"name":"j","dataset":{"kind":"cifar10","path":"cifar"}}';
    expect(absolutizeSpecPaths(json, '/d').text).toBe('{"name":"j","dataset":{"kind":"cifar10","path":"/d/cifar"}}');
    expect(absolutizeSpecPaths('name: [', '/d').text).toBe('name: [');
  });
});

describe('onlyMeasuresText', () => {
  it('sets measures.only, adding measures when absent, and keeps the rest of the spec', () => {
    const plain = 'name: m\ndataset: { kind: mnist }\narms: [baseA, baseB, AnB]\n';
    const spec = validateSpec(parse(onlyMeasuresText(plain)) as SweepSpecInput);
    expect(spec.measures).toMatchObject({ only: true, examples: 500 });
    expect(spec.arms).toEqual(['baseA', 'baseB', 'AnB']);
    expect(expandGrid(spec).cells.map((cell) => cell.arm)).not.toContain('AnB');
    const withSettings = 'name: m\ndataset: { kind: mnist }\nmeasures:\n  examples: 64\n';
    expect(validateSpec(parse(onlyMeasuresText(withSettings)) as SweepSpecInput).measures).toMatchObject({
      only: true,
      examples: 64,
    });
  });
});
