package dev.auditlog.hdfs;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.concurrent.CountDownLatch;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.protocol.DatanodeInfo;
import org.apache.hadoop.hdfs.protocol.HdfsConstants.DatanodeReportType;

/**
 * A real HDFS for tests: one NameNode and one DataNode (MiniDFSCluster), plain "simple" auth,
 * no HA, no Kerberos, everything bound to 127.0.0.1.
 *
 * <pre>
 * MiniDfs [--port N] [--base-dir DIR] [--url-file FILE] [--block-size BYTES] [--stdin]
 * </pre>
 *
 * <ul>
 *   <li>--port: NameNode RPC port; 0 (default) picks a free one.
 *   <li>--base-dir: where the cluster keeps its name/data dirs; wiped at start (a fresh, empty
 *       file system every time). Default: a new temporary directory.
 *   <li>--url-file: once the cluster is up, {@code hdfs://127.0.0.1:PORT} is written there
 *       (atomically: temp file + rename). Always also printed on stdout.
 *   <li>--block-size: dfs.blocksize (default 16 MiB, so multi-block files are cheap to test).
 *   <li>--stdin: also shut down when standard input reaches EOF (for a parent that pipes into
 *       us). Without it the cluster runs until SIGTERM/SIGINT.
 * </ul>
 *
 * Shutdown (signal or stdin EOF) closes the cluster cleanly and removes the url file.
 */
public final class MiniDfs {
  private MiniDfs() {}

  public static void main(String[] args) throws Exception {
    int port = 0;
    String baseDir = null;
    String urlFile = null;
    long blockSize = 16L * 1024 * 1024;
    boolean watchStdin = false;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--port" -> port = Integer.parseInt(args[++i]);
        case "--base-dir" -> baseDir = args[++i];
        case "--url-file" -> urlFile = args[++i];
        case "--block-size" -> blockSize = Long.parseLong(args[++i]);
        case "--stdin" -> watchStdin = true;
        case "-h", "--help" -> {
          System.out.println(
              "usage: MiniDfs [--port N] [--base-dir DIR] [--url-file FILE] [--block-size BYTES] [--stdin]");
          return;
        }
        default -> {
          System.err.println("MiniDfs: unknown argument " + args[i]);
          System.exit(2);
        }
      }
    }
    File base =
        baseDir != null
            ? new File(baseDir).getAbsoluteFile()
            : Files.createTempDirectory("minidfs").toFile();
    base.mkdirs();

    Configuration conf = new HdfsConfiguration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getPath());
    conf.set("hadoop.tmp.dir", new File(base, "tmp").getPath());
    conf.set("hadoop.security.authentication", "simple");
    conf.setBoolean("hadoop.security.authorization", false);
    // Any client user may write anywhere: tests run as whoever they run as.
    conf.setBoolean(DFSConfigKeys.DFS_PERMISSIONS_ENABLED_KEY, false);
    conf.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, 1);
    conf.setLong(DFSConfigKeys.DFS_BLOCK_SIZE_KEY, blockSize);
    conf.setLong(DFSConfigKeys.DFS_NAMENODE_MIN_BLOCK_SIZE_KEY, 0);
    // Every address on loopback, and the DataNode registers itself as 127.0.0.1, so the
    // address the NameNode hands to clients (ipAddr and hostName) is reachable from here.
    conf.set(DFSConfigKeys.DFS_NAMENODE_RPC_BIND_HOST_KEY, "127.0.0.1");
    conf.set(DFSConfigKeys.DFS_NAMENODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
    conf.set(DFSConfigKeys.DFS_DATANODE_HOST_NAME_KEY, "127.0.0.1");
    conf.setInt(DFSConfigKeys.DFS_HEARTBEAT_INTERVAL_KEY, 1);

    long t0 = System.nanoTime();
    MiniDFSCluster cluster =
        new MiniDFSCluster.Builder(conf, base)
            .nameNodePort(port)
            .nameNodeHttpPort(0)
            .numDataNodes(1)
            .format(true)
            .manageNameDfsDirs(true)
            .manageDataDfsDirs(true)
            .checkDataNodeAddrConfig(false)
            .build();
    cluster.waitActive();
    cluster.waitClusterUp();

    int nnPort = cluster.getNameNodePort();
    String url = "hdfs://127.0.0.1:" + nnPort;

    // Report what clients will be told about the DataNode, and sanity-check it.
    DistributedFileSystem fs = cluster.getFileSystem();
    for (DatanodeInfo dn : fs.getDataNodeStats(DatanodeReportType.LIVE)) {
      System.err.printf(
          "MiniDfs: datanode ipAddr=%s hostName=%s xferPort=%d%n",
          dn.getIpAddr(), dn.getHostName(), dn.getXferPort());
      if (!dn.getIpAddr().startsWith("127.")) {
        System.err.println("MiniDfs: WARNING datanode address is not loopback: " + dn.getIpAddr());
      }
    }
    System.err.printf(
        "MiniDfs: up at %s in %d ms (base dir %s)%n",
        url, (System.nanoTime() - t0) / 1_000_000, base);

    Path urlPath = urlFile != null ? Paths.get(urlFile).toAbsolutePath() : null;
    // Shut down on SIGTERM/SIGINT (or stdin EOF with --stdin) from the main thread, not from a
    // JVM shutdown hook: Hadoop's ShutdownHookManager refuses hook changes during JVM shutdown,
    // which makes MiniDFSCluster.shutdown() fail halfway when called from a hook.
    CountDownLatch stop = new CountDownLatch(1);
    for (String sig : new String[] {"TERM", "INT", "HUP"}) {
      sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> stop.countDown());
    }
    if (watchStdin) {
      Thread stdin =
          new Thread(
              () -> {
                try {
                  InputStream in = System.in;
                  byte[] buf = new byte[256];
                  while (in.read(buf) >= 0) {
                    // discard: we only wait for EOF
                  }
                } catch (IOException ignored) {
                  // treat as EOF
                }
                stop.countDown();
              },
              "minidfs-stdin");
      stdin.setDaemon(true);
      stdin.start();
    }

    if (urlPath != null) {
      Path tmp = urlPath.resolveSibling(urlPath.getFileName() + ".tmp");
      Files.createDirectories(urlPath.getParent());
      Files.write(tmp, (url + "\n").getBytes(StandardCharsets.UTF_8));
      Files.move(tmp, urlPath, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
    System.out.println(url);
    System.out.flush();

    stop.await();
    System.err.println("MiniDfs: shutting down");
    if (urlPath != null) {
      Files.deleteIfExists(urlPath);
    }
    int rc = 0;
    try {
      cluster.shutdown(true);
    } catch (Throwable t) {
      System.err.println("MiniDfs: error during shutdown: " + t);
      rc = 1;
    }
    System.err.println("MiniDfs: stopped");
    System.exit(rc);
  }
}
