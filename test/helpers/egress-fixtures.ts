/** The VM the unit tests of the egress rules write rules for (network/egress.ts policyRules). */
export const RULES_VM = {
  vmId: 'ab12',
  tap: 'tap-ab12',
  ip: '10.0.0.5',
  mac: '06:00:0A:00:00:05',
  gateway: '10.0.0.1',
  subnet: '10.0.0.0/24',
} as const;
