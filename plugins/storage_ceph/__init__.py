"""Built-in plugin: Ceph storage (OSDs, pools, volumes, snapshots, benchmark) via rados/rbd."""
