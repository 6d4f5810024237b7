export { SluiceError, InvalidOptionError } from './errors.js';
export * from './pool/index.js';
