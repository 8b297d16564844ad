// Minimal declarations for the Node built-ins that Node-only runtime files
// (runtime/node/, runtime/cli.mjs, the file: branch of kernels.js) import,
// so `tsc -p jsconfig.json` checks them without @types/node (not a dependency).
declare module "node:fs/promises";
declare module "node:fs";
declare module "node:path";
declare module "node:url";
declare module "node:crypto";
declare module "node:process";
declare module "node:util";
declare module "node:worker_threads";
declare var process: any;
