/** QEMU option values escape ',' as ',,' (every path that goes into a QEMU option: drives, sockets, shared folders). */
export function qopt(value: string): string {
  return value.replace(/,/g, ',,');
}
