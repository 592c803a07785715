// Conv2D gradient kernels for the tfjs wasm backend, written as forward convolutions.
//
// Stock wasm 4.22 has no Conv2DBackpropFilter (so it cannot train a conv net) and a slow
// Conv2DBackpropInput. Its forward Conv2D runs on XNNPACK, so both gradients are rewritten
// as forward convolutions (DESIGN.md, "Facts that shape the code").
//
// The kernels compose the wasm backend's own kernels on TensorInfos rather than calling tfjs
// ops: every intermediate then lives on wasm, nothing is recorded on a gradient tape, and the
// engine's tensor count is untouched because intermediates never become engine tensors.

// Imported for its side effect: the stock wasm kernels must be registered before ours, or a
// later first import of the package would put its own Conv2DBackpropInput back over ours.
import '@tensorflow/tfjs-backend-wasm';
import {
  backend_util,
  Conv2DBackpropFilter,
  Conv2DBackpropInput,
  getKernel,
  registerKernel,
  unregisterKernel,
} from '@tensorflow/tfjs-core';
import type {
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropInputAttrs,
  KernelBackend,
  KernelConfig,
  KernelFunc,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
} from '@tensorflow/tfjs-core';

const BACKEND = 'wasm';

// A global symbol, so that a second copy of this module (vitest module resets, duplicated
// installs) still recognises kernels registered by the first and stays idempotent.
const OURS = Symbol.for('transferlab.nn.wasmConvGradients');

type Shape4 = [number, number, number, number];
type PadPair = [number, number];

/**
 * Owns the intermediates made while one kernel runs and frees them at the end, so a kernel
 * that throws halfway leaks nothing either.
 */
class KernelScope {
  private readonly owned: TensorInfo[] = [];

  constructor(private readonly backend: KernelBackend) {}

  run(kernelName: string, inputs: NamedTensorInfoMap, attrs: NamedAttrMap = {}): TensorInfo {
    const kernel = getKernel(kernelName, BACKEND);
    if (kernel === undefined) {
      throw new Error(`wasm conv gradients need the wasm kernel '${kernelName}', which is not registered`);
    }
    const out = kernel.kernelFunc({ inputs, backend: this.backend, attrs });
    if (Array.isArray(out)) {
      throw new Error(`wasm kernel '${kernelName}' returned ${out.length} outputs, expected one`);
    }
    this.owned.push(out);
    return out;
  }

  /** Hands `result` to the caller: it survives dispose(). */
  release(result: TensorInfo): TensorInfo {
    const at = this.owned.indexOf(result);
    if (at < 0) {
      throw new Error('wasm conv gradients: a kernel result must be made inside its scope');
    }
    this.owned.splice(at, 1);
    return result;
  }

  dispose(): void {
    // Reshape shares its input's buffer and bumps a reference count, so every owned info,
    // aliases included, is released exactly once.
    for (const info of this.owned) this.backend.disposeData(info.dataId);
    this.owned.length = 0;
  }
}

function inScope(backend: unknown, body: (scope: KernelScope) => TensorInfo): TensorInfo {
  const scope = new KernelScope(backend as KernelBackend);
  try {
    return scope.release(body(scope));
  } finally {
    scope.dispose();
  }
}

function assertSupported(kernelName: string, attrs: NamedAttrMap): void {
  if (attrs['dataFormat'] === 'NCHW') {
    throw new Error(`${kernelName} on wasm: dataFormat 'NCHW' is not supported, only 'NHWC' (channels last)`);
  }
  // The backprop kernels carry no dilations attribute in tfjs 4.22 (core's Conv2D gradient
  // already refuses dilated convs); this catches a caller that passes one anyway.
  const dilations = attrs['dilations'];
  const values = Array.isArray(dilations) ? dilations : dilations == null ? [] : [dilations];
  if (values.some((d) => d !== 1)) {
    throw new Error(
      `${kernelName} on wasm: dilations ${JSON.stringify(dilations)} are not supported, ` +
        'only a forward conv with dilations 1',
    );
  }
}

function asShape4(kernelName: string, what: string, shape: readonly number[]): Shape4 {
  if (shape.length !== 4) {
    throw new Error(`${kernelName} on wasm: ${what} must be rank 4 (NHWC), got [${shape}]`);
  }
  return shape as Shape4;
}

/**
 * Applies per-axis padding where amounts may be negative: a negative amount crops that many
 * rows instead. Returns `x` itself when there is nothing to do.
 */
function padOrCrop(scope: KernelScope, x: TensorInfo, pads: readonly PadPair[]): TensorInfo {
  let out = x;
  if (pads.some(([before, after]) => before < 0 || after < 0)) {
    const begin = pads.map(([before]) => Math.max(0, -before));
    const size = pads.map(([before, after], axis) => (x.shape[axis] ?? 0) - Math.max(0, -before) - Math.max(0, -after));
    out = scope.run('Slice', { x: out }, { begin, size });
  }
  if (pads.some(([before, after]) => before > 0 || after > 0)) {
    const paddings = pads.map(([before, after]) => [Math.max(0, before), Math.max(0, after)]);
    out = scope.run('PadV2', { x: out }, { paddings, constantValue: 0 });
  }
  return out;
}

function explicitPad(rows: PadPair, cols: PadPair): NamedAttrMap['pad'] {
  return [
    [0, 0],
    [Math.max(0, rows[0]), Math.max(0, rows[1])],
    [Math.max(0, cols[0]), Math.max(0, cols[1])],
    [0, 0],
  ];
}

function convInfo(
  inputShape: Shape4,
  filterShape: Shape4,
  attrs: Conv2DBackpropFilterAttrs | Conv2DBackpropInputAttrs,
): backend_util.Conv2DInfo {
  return backend_util.computeConv2DInfo(
    inputShape,
    filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
}

function assertDyShape(kernelName: string, dy: TensorInfo, info: backend_util.Conv2DInfo): void {
  const expected = info.outShape;
  if (dy.shape.length !== 4 || dy.shape.some((d, i) => d !== expected[i])) {
    throw new Error(`${kernelName} on wasm: dy has shape [${dy.shape}], the forward conv output is [${expected}]`);
  }
}

/**
 * dW[kh,kw,ci,co] = sum over n,oh,ow of xpad[n, oh*sh+kh, ow*sw+kw, ci] * dy[n,oh,ow,co]:
 * a conv over x with channels and batch swapped ([Ci,H,W,N]), using dy as the filter
 * ([OH,OW,N,Co]), dilated by the forward stride, giving [Ci,KH,KW,Co].
 */
const conv2dBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const name = Conv2DBackpropFilter;
  const a = (attrs ?? {}) as unknown as Conv2DBackpropFilterAttrs;
  assertSupported(name, (attrs ?? {}) as NamedAttrMap);
  const { x, dy } = inputs;
  if (x === undefined || dy === undefined) throw new Error(`${name} on wasm: needs x and dy`);
  const xShape = asShape4(name, 'x', x.shape);
  const filterShape = asShape4(name, 'filterShape', a.filterShape);
  const info = convInfo(xShape, filterShape, a);
  assertDyShape(name, dy, info);
  const { top, left } = info.padInfo;
  // The forward conv's last tap reads padded row (OH-1)*sh + KH - 1; rows past it (a stride
  // that does not divide the input evenly) are cropped so the output is exactly KH tall.
  const rowsRead = (info.outHeight - 1) * info.strideHeight + info.filterHeight;
  const colsRead = (info.outWidth - 1) * info.strideWidth + info.filterWidth;
  if (rowsRead <= top || colsRead <= left) {
    throw new Error(`${name} on wasm: padding ${JSON.stringify(a.pad)} leaves no input in reach`);
  }
  const rows: PadPair = [top, rowsRead - top - info.inHeight];
  const cols: PadPair = [left, colsRead - left - info.inWidth];

  return inScope(backend, (scope) => {
    const xCropped = padOrCrop(scope, x, [
      [0, 0],
      [0, Math.min(0, rows[1])],
      [0, Math.min(0, cols[1])],
      [0, 0],
    ]);
    const xT = scope.run('Transpose', { x: xCropped }, { perm: [3, 1, 2, 0] });
    const dyT = scope.run('Transpose', { x: dy }, { perm: [1, 2, 0, 3] });
    const grad = scope.run(
      'Conv2D',
      { x: xT, filter: dyT },
      {
        strides: [1, 1],
        dilations: [info.strideHeight, info.strideWidth],
        pad: explicitPad(rows, cols),
        dataFormat: 'NHWC',
      },
    );
    return scope.run('Transpose', { x: grad }, { perm: [1, 2, 0, 3] });
  });
};

/**
 * dX is the full correlation of dy, zero-upsampled by the stride, with the filter rotated
 * 180 degrees and its channel axes swapped ([KH,KW,Co,Ci]). Padding before each spatial axis
 * is K-1-pad; after it, whatever makes the output exactly the forward input's size.
 */
const conv2dBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const name = Conv2DBackpropInput;
  const a = (attrs ?? {}) as unknown as Conv2DBackpropInputAttrs;
  assertSupported(name, (attrs ?? {}) as NamedAttrMap);
  const { dy, filter } = inputs;
  if (dy === undefined || filter === undefined) {
    throw new Error(`${name} on wasm: needs dy and filter`);
  }
  const inputShape = asShape4(name, 'inputShape', a.inputShape);
  const filterShape = asShape4(name, 'filter', filter.shape);
  const info = convInfo(inputShape, filterShape, a);
  assertDyShape(name, dy, info);
  const [batch, outHeight, outWidth, outChannels] = info.outShape;
  const { strideHeight: sh, strideWidth: sw, filterHeight: kh, filterWidth: kw } = info;

  return inScope(backend, (scope) => {
    let upsampled = dy;
    if (sh > 1 || sw > 1) {
      // Interleave zeros by padding a unit axis after each spatial axis; the trailing zeros
      // this adds at the end are accounted for in the "after" padding below.
      const split = scope.run('Reshape', { x: dy }, { shape: [batch, outHeight, 1, outWidth, 1, outChannels] });
      const spread = scope.run(
        'PadV2',
        { x: split },
        {
          paddings: [
            [0, 0],
            [0, 0],
            [0, sh - 1],
            [0, 0],
            [0, sw - 1],
            [0, 0],
          ],
          constantValue: 0,
        },
      );
      upsampled = scope.run('Reshape', { x: spread }, { shape: [batch, outHeight * sh, outWidth * sw, outChannels] });
    }
    const before: PadPair = [kh - 1 - info.padInfo.top, kw - 1 - info.padInfo.left];
    const rows: PadPair = [before[0], info.inHeight + kh - 1 - before[0] - outHeight * sh];
    const cols: PadPair = [before[1], info.inWidth + kw - 1 - before[1] - outWidth * sw];
    const cropped = padOrCrop(scope, upsampled, [
      [0, 0],
      [Math.min(0, rows[0]), Math.min(0, rows[1])],
      [Math.min(0, cols[0]), Math.min(0, cols[1])],
      [0, 0],
    ]);
    const flipped = scope.run('Reverse', { x: filter }, { dims: [0, 1] });
    const swapped = scope.run('Transpose', { x: flipped }, { perm: [0, 1, 3, 2] });
    return scope.run(
      'Conv2D',
      { x: cropped, filter: swapped },
      { strides: [1, 1], dilations: [1, 1], pad: explicitPad(rows, cols), dataFormat: 'NHWC' },
    );
  });
};

const kernels: ReadonlyArray<KernelConfig & { [OURS]: true }> = [
  { kernelName: Conv2DBackpropFilter, backendName: BACKEND, kernelFunc: conv2dBackpropFilter, [OURS]: true },
  { kernelName: Conv2DBackpropInput, backendName: BACKEND, kernelFunc: conv2dBackpropInput, [OURS]: true },
];

/**
 * Registers Conv2DBackpropFilter and Conv2DBackpropInput for the wasm backend, replacing the
 * stock Conv2DBackpropInput. Safe to call any number of times.
 */
export function registerWasmConvGradients(): void {
  for (const config of kernels) {
    const current = getKernel(config.kernelName, BACKEND);
    if (current !== undefined && OURS in current) continue;
    // Unregister first: registerKernel only warns on a clash, and the warning would be noise.
    if (current !== undefined) unregisterKernel(config.kernelName, BACKEND);
    registerKernel(config);
  }
}
