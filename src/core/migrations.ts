/**
 * Versioned schema migrations. Append only: never edit one that shipped. Index + 1 is the
 * `user_version` after the migration ran. Each runs in one transaction.
 */
export const migrations: { name: string; sql: string }[] = [
  {
    name: 'initial',
    sql: `
      CREATE TABLE kernels (
        name TEXT PRIMARY KEY,
        distro TEXT NOT NULL DEFAULT '',
        arch TEXT NOT NULL DEFAULT 'x86_64',
        kernel_version TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL,
        vmlinux_sha256 TEXT NOT NULL,
        has_initrd INTEGER NOT NULL DEFAULT 0,
        has_modules INTEGER NOT NULL DEFAULT 0,
        size_bytes INTEGER NOT NULL DEFAULT 0,
        path TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE TABLE images (
        name TEXT PRIMARY KEY,
        source_ref TEXT NOT NULL,
        digest TEXT NOT NULL DEFAULT '',
        platform TEXT NOT NULL DEFAULT 'linux/amd64',
        config_json TEXT NOT NULL DEFAULT '{}',
        size_bytes INTEGER NOT NULL DEFAULT 0,
        kernel_ref TEXT,
        rootfs_path TEXT NOT NULL,
        from_registry INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
      );
      CREATE TABLE image_blobs (
        image_name TEXT NOT NULL REFERENCES images(name) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (image_name, digest)
      );
      CREATE TABLE vms (
        name TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        image_name TEXT NOT NULL,
        kernel_name TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        desired_state TEXT NOT NULL DEFAULT 'stopped',
        state TEXT NOT NULL DEFAULT 'created',
        vmm TEXT NOT NULL,
        vmm_reason TEXT NOT NULL DEFAULT '',
        pid INTEGER,
        tap TEXT,
        mac TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT
      );
      CREATE TABLE ip_leases (
        ip TEXT PRIMARY KEY,
        vm_name TEXT NOT NULL UNIQUE REFERENCES vms(name) ON DELETE CASCADE,
        leased_at TEXT NOT NULL
      );
      CREATE TABLE registry_credentials (
        registry TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        secret TEXT NOT NULL,
        updated_at TEXT NOT NULL
      );
    `,
  },
  {
    // One content store: which image, kernel or cache entry uses which blob (sha256:<hex>).
    // Image references mirror image_blobs; a deleted image or kernel drops its references.
    name: 'blob_refs',
    sql: `
      CREATE TABLE blob_refs (
        digest TEXT NOT NULL,
        owner_kind TEXT NOT NULL CHECK (owner_kind IN ('image', 'kernel', 'cache')),
        owner TEXT NOT NULL,
        PRIMARY KEY (digest, owner_kind, owner)
      );
      CREATE INDEX blob_refs_owner ON blob_refs (owner_kind, owner);
      INSERT OR IGNORE INTO blob_refs (digest, owner_kind, owner) SELECT digest, 'image', image_name FROM image_blobs;
      CREATE TRIGGER image_blobs_ref AFTER INSERT ON image_blobs BEGIN
        INSERT OR IGNORE INTO blob_refs (digest, owner_kind, owner) VALUES (NEW.digest, 'image', NEW.image_name);
      END;
      CREATE TRIGGER image_blobs_unref AFTER DELETE ON image_blobs BEGIN
        DELETE FROM blob_refs WHERE owner_kind = 'image' AND owner = OLD.image_name AND digest = OLD.digest;
      END;
      CREATE TRIGGER images_unref AFTER DELETE ON images BEGIN
        DELETE FROM blob_refs WHERE owner_kind = 'image' AND owner = OLD.name;
      END;
      CREATE TRIGGER kernels_unref AFTER DELETE ON kernels BEGIN
        DELETE FROM blob_refs WHERE owner_kind = 'kernel' AND owner = OLD.name;
      END;
    `,
  },
  {
    // Instance identity: one random id per state database, written into every host resource
    // this instance creates (bridge and tap ifalias, NAT rule comments, QEMU -name), so its
    // reconcile touches only its own. `vms.create_done` is 0 while a create is in flight: a
    // daemon killed mid-create leaves such a row, which the next reconcile adopts (VMM alive)
    // or removes entirely.
    name: 'instance-identity',
    sql: `
      CREATE TABLE instance (id TEXT NOT NULL, created_at TEXT NOT NULL);
      INSERT INTO instance (id, created_at) VALUES (lower(hex(randomblob(6))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
      ALTER TABLE vms ADD COLUMN create_done INTEGER NOT NULL DEFAULT 1;
    `,
  },
  {
    // Lifetimes (vm create --ttl): the deadline (ISO, UTC) and what it does (stop | rm), kept in
    // the row so they hold across daemon restarts. NULL: the VM lives until removed.
    name: 'vm-expiry',
    sql: `
      ALTER TABLE vms ADD COLUMN expires_at TEXT;
      ALTER TABLE vms ADD COLUMN on_expire TEXT CHECK (on_expire IN ('stop', 'rm'));
    `,
  },
];
