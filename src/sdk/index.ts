/**
 * The banger SDK: `import { Banger } from 'banger'`. See docs/sdk.md for a tour.
 *
 * Everything here is built on the one RPC contract (rpc/contract.ts, also exported as
 * `banger/contract`): option types are the contract's params, results its result types.
 */
export { Banger, SDK_VERSION, type ConnectOptions } from './banger.js';
export { Kernels, Images, type KernelPullOptions, type KernelImportOptions, type ImagePullOptions, type ImageImportOptions } from './artifacts.js';
export { Vms, Vm, type CreateOptions, type LogsOptions } from './vms.js';
export { VmProcess, type ExecOptions, type ExecResult, type SpawnOptions, type ProcessExit } from './process.js';
export { VmFiles, type FileEntry, type FileStat } from './files.js';
export { Operation, type OperationOptions } from './operation.js';
export { BangerError, ErrorCode, isBangerError } from '../core/errors.js';
export type { ProgressEvent } from '../core/operation.js';
export type {
  Vm as VmInfo,
  VmDetail,
  VmPorts,
  VmLogs,
  VmState,
  Kernel,
  KernelDetail,
  KernelCatalog,
  KernelPullResult,
  KernelRemoved,
  Image,
  ImageDetail,
  Removed,
  PruneResult,
  DaemonStatus,
  ListeningPort,
} from '../rpc/types.js';
