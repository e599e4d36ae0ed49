package dev.auditlog.hdfs;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.Writer;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.parquet.example.data.Group;
import org.apache.parquet.hadoop.ParquetFileReader;
import org.apache.parquet.hadoop.ParquetReader;
import org.apache.parquet.hadoop.example.GroupReadSupport;
import org.apache.parquet.hadoop.metadata.FileMetaData;
import org.apache.parquet.hadoop.util.HadoopInputFile;
import org.apache.parquet.io.api.Binary;
import org.apache.parquet.schema.GroupType;
import org.apache.parquet.schema.LogicalTypeAnnotation;
import org.apache.parquet.schema.PrimitiveType;
import org.apache.parquet.schema.Type;

/**
 * Reads Parquet files with Hadoop's own reader (parquet-hadoop, {@link ParquetReader} +
 * {@link GroupReadSupport}) and prints every row as one JSON line on stdout.
 *
 * <pre>
 * ParquetDump PATH...     PATH: hdfs://host:port/dir, file:///dir, or a local path
 * </pre>
 *
 * Directories are walked recursively; names starting with "." or "_" are skipped (hidden
 * temporaries, _SUCCESS), like Hive/Spark do. Files are read in sorted path order.
 *
 * <p>Value mapping: strings (STRING/ENUM/JSON annotated BINARY) as JSON strings; integers as
 * numbers, including timestamps, which stay in the file's unit (TIMESTAMP(MILLIS) = epoch
 * millis); INT96 as epoch millis; DECIMAL as a number; other BINARY/FIXED as base64 strings;
 * missing values as null; LIST groups and repeated fields as arrays, other groups as objects.
 *
 * <p>stderr gets, per file, {"file":..., "rows":..., "created_by":..., "metadata":{...},
 * "schema":"..."} and at the end {"files": N, "rows": M} (N = files read). A file that cannot be
 * read gets {"file":..., "error":...} instead, the others are still read, the final line adds
 * "failed": K, and the exit code is 1. A path with no files is not an error.
 */
public final class ParquetDump {
  private ParquetDump() {}

  public static void main(String[] args) throws Exception {
    if (args.length == 0) {
      System.err.println("usage: ParquetDump PATH...   (hdfs://..., file://..., or a local path)");
      System.exit(2);
    }
    Configuration conf = new Configuration();
    List<Path> files = new ArrayList<>();
    for (String arg : args) {
      Path root = new Path(arg);
      if (root.toUri().getScheme() == null) {
        root = new Path(new java.io.File(arg).getAbsoluteFile().toURI());
      }
      FileSystem fs = FileSystem.get(URI.create(root.toUri().toString()), conf);
      collect(fs, fs.getFileStatus(root), files, true);
    }
    files.sort((a, b) -> a.toString().compareTo(b.toString()));

    Writer out =
        new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8), 1 << 16);
    PrintStream err = System.err;
    long total = 0;
    int failed = 0;
    for (Path file : files) {
      long rows = 0;
      FileMetaData meta;
      try {
        try (ParquetFileReader fr =
            ParquetFileReader.open(HadoopInputFile.fromPath(file, conf))) {
          meta = fr.getFooter().getFileMetaData();
        }
        try (ParquetReader<Group> reader =
            ParquetReader.builder(new GroupReadSupport(), file).withConf(conf).build()) {
          Group g;
          StringBuilder sb = new StringBuilder(256);
          while ((g = reader.read()) != null) {
            sb.setLength(0);
            writeGroup(sb, g, g.getType());
            sb.append('\n');
            out.write(sb.toString());
            rows++;
          }
        }
      } catch (Exception e) {
        out.flush();
        failed++;
        total += rows; // rows already printed: "rows" always equals the lines on stdout
        StringBuilder info = new StringBuilder("{\"file\":");
        str(info, file.toString());
        info.append(",\"rows_before_error\":").append(rows).append(",\"error\":");
        str(info, e.toString());
        info.append('}');
        err.println(info);
        continue;
      }
      out.flush();
      total += rows;
      StringBuilder info = new StringBuilder();
      info.append("{\"file\":");
      str(info, file.toString());
      info.append(",\"rows\":").append(rows).append(",\"created_by\":");
      str(info, meta.getCreatedBy());
      info.append(",\"metadata\":{");
      boolean first = true;
      for (Map.Entry<String, String> e : new TreeMap<>(meta.getKeyValueMetaData()).entrySet()) {
        if (e.getKey().equals("ARROW:schema")) {
          continue; // base64 IPC blob, not useful here
        }
        if (!first) {
          info.append(',');
        }
        first = false;
        str(info, e.getKey());
        info.append(':');
        str(info, e.getValue());
      }
      info.append("},\"schema\":");
      str(info, meta.getSchema().toString().replace('\n', ' ').replaceAll(" +", " ").trim());
      info.append('}');
      err.println(info);
    }
    out.flush();
    err.println("{\"files\": " + (files.size() - failed) + ", \"rows\": " + total
        + (failed > 0 ? ", \"failed\": " + failed : "") + "}");
    System.exit(failed > 0 ? 1 : 0);
  }

  private static void collect(FileSystem fs, FileStatus st, List<Path> acc, boolean isRoot)
      throws IOException {
    String name = st.getPath().getName();
    if (!isRoot && (name.startsWith(".") || name.startsWith("_"))) {
      return;
    }
    if (st.isDirectory()) {
      for (FileStatus child : fs.listStatus(st.getPath())) {
        collect(fs, child, acc, false);
      }
    } else {
      acc.add(st.getPath());
    }
  }

  private static void writeGroup(StringBuilder sb, Group g, GroupType type) {
    sb.append('{');
    for (int i = 0; i < type.getFieldCount(); i++) {
      if (i > 0) {
        sb.append(',');
      }
      Type field = type.getType(i);
      str(sb, field.getName());
      sb.append(':');
      int n = g.getFieldRepetitionCount(i);
      if (field.isRepetition(Type.Repetition.REPEATED)) {
        sb.append('[');
        for (int j = 0; j < n; j++) {
          if (j > 0) {
            sb.append(',');
          }
          writeValue(sb, g, i, j, field);
        }
        sb.append(']');
      } else if (n == 0) {
        sb.append("null");
      } else {
        writeValue(sb, g, i, 0, field);
      }
    }
    sb.append('}');
  }

  /** A LIST-annotated group as a JSON array (3-level and legacy 2-level layouts). */
  private static void writeList(StringBuilder sb, Group list, Type repeated) {
    int n = list.getFieldRepetitionCount(0);
    sb.append('[');
    for (int j = 0; j < n; j++) {
      if (j > 0) {
        sb.append(',');
      }
      if (!repeated.isPrimitive() && repeated.asGroupType().getFieldCount() == 1) {
        // list -> repeated group list -> element
        Group item = list.getGroup(0, j);
        Type element = repeated.asGroupType().getType(0);
        if (item.getFieldRepetitionCount(0) == 0) {
          sb.append("null");
        } else {
          writeValue(sb, item, 0, 0, element);
        }
      } else {
        writeValue(sb, list, 0, j, repeated);
      }
    }
    sb.append(']');
  }

  private static void writeValue(StringBuilder sb, Group g, int field, int index, Type type) {
    if (!type.isPrimitive()) {
      GroupType gt = type.asGroupType();
      Group child = g.getGroup(field, index);
      if (gt.getLogicalTypeAnnotation() instanceof LogicalTypeAnnotation.ListLogicalTypeAnnotation
          && gt.getFieldCount() == 1
          && gt.getType(0).isRepetition(Type.Repetition.REPEATED)) {
        writeList(sb, child, gt.getType(0));
      } else {
        writeGroup(sb, child, gt);
      }
      return;
    }
    PrimitiveType p = type.asPrimitiveType();
    LogicalTypeAnnotation logical = p.getLogicalTypeAnnotation();
    switch (p.getPrimitiveTypeName()) {
      case BOOLEAN -> sb.append(g.getBoolean(field, index));
      case INT32 -> {
        int v = g.getInteger(field, index);
        if (logical instanceof LogicalTypeAnnotation.DecimalLogicalTypeAnnotation d) {
          sb.append(BigDecimal.valueOf(v, d.getScale()).toPlainString());
        } else if (logical instanceof LogicalTypeAnnotation.IntLogicalTypeAnnotation i
            && !i.isSigned()) {
          sb.append(Integer.toUnsignedString(v));
        } else {
          sb.append(v);
        }
      }
      case INT64 -> {
        long v = g.getLong(field, index);
        if (logical instanceof LogicalTypeAnnotation.DecimalLogicalTypeAnnotation d) {
          sb.append(BigDecimal.valueOf(v, d.getScale()).toPlainString());
        } else if (logical instanceof LogicalTypeAnnotation.IntLogicalTypeAnnotation i
            && !i.isSigned()) {
          sb.append(Long.toUnsignedString(v));
        } else {
          sb.append(v); // includes TIMESTAMP(MILLIS|MICROS|NANOS), in the file's unit
        }
      }
      case INT96 -> {
        // Legacy Impala/Hive timestamp: 8 bytes nanos-of-day + 4 bytes Julian day, little endian.
        ByteBuffer b = g.getInt96(field, index).toByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
        long nanos = b.getLong();
        long julianDay = b.getInt() & 0xffffffffL;
        sb.append((julianDay - 2_440_588L) * 86_400_000L + nanos / 1_000_000L);
      }
      case FLOAT -> {
        float f = g.getFloat(field, index);
        if (Float.isNaN(f) || Float.isInfinite(f)) {
          str(sb, Float.toString(f)); // JSON has no NaN/Infinity
        } else {
          sb.append(f);
        }
      }
      case DOUBLE -> number(sb, g.getDouble(field, index));
      case BINARY, FIXED_LEN_BYTE_ARRAY -> {
        Binary v = g.getBinary(field, index);
        if (logical instanceof LogicalTypeAnnotation.StringLogicalTypeAnnotation
            || logical instanceof LogicalTypeAnnotation.EnumLogicalTypeAnnotation
            || logical instanceof LogicalTypeAnnotation.JsonLogicalTypeAnnotation) {
          str(sb, v.toStringUsingUTF8());
        } else if (logical instanceof LogicalTypeAnnotation.DecimalLogicalTypeAnnotation d) {
          sb.append(new BigDecimal(new BigInteger(v.getBytes()), d.getScale()).toPlainString());
        } else {
          str(sb, Base64.getEncoder().encodeToString(v.getBytes()));
        }
      }
      default -> throw new IllegalStateException("unsupported type " + p);
    }
  }

  private static void number(StringBuilder sb, double d) {
    if (Double.isNaN(d) || Double.isInfinite(d)) {
      str(sb, Double.toString(d)); // JSON has no NaN/Infinity
    } else {
      sb.append(d);
    }
  }

  /** Appends s as a JSON string literal. */
  static void str(StringBuilder sb, String s) {
    if (s == null) {
      sb.append("null");
      return;
    }
    sb.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"' -> sb.append("\\\"");
        case '\\' -> sb.append("\\\\");
        case '\n' -> sb.append("\\n");
        case '\r' -> sb.append("\\r");
        case '\t' -> sb.append("\\t");
        case '\b' -> sb.append("\\b");
        case '\f' -> sb.append("\\f");
        default -> {
          if (c < 0x20 || c == 0x2028 || c == 0x2029) {
            sb.append(String.format("\\u%04x", (int) c));
          } else {
            sb.append(c);
          }
        }
      }
    }
    sb.append('"');
  }
}
