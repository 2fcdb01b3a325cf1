import { PackageUrl } from '../core/package-url.js';

/** The URL schema lives in core (the config file validates it too). */
export { PackageUrl };

/** What a VM's first boot uses for its install (undefined fields: the guest's own sources, no proxy). */
export interface PackageSource {
  mirror?: string;
  proxy?: string;
}

/** The create parameter wins over the config default; a trailing slash of the mirror is dropped. */
export function resolvePackageSource(params: PackageSource, config: PackageSource): PackageSource {
  const mirror = params.mirror ?? config.mirror;
  const proxy = params.proxy ?? config.proxy;
  return { mirror: mirror?.replace(/\/+$/, ''), proxy };
}
