"""What a JVM running Hadoop's client or servers needs on Java 17 and newer: the packages of
``java.base`` Hadoop reaches into by reflection, opened to it (DistCp here, HDFS and the Hive
Metastore on the local stack)."""

HADOOP_JAVA17_OPENS: tuple[str, ...] = tuple(
    f"--add-opens=java.base/{p}=ALL-UNNAMED"
    for p in (
        "java.lang",
        "java.lang.reflect",
        "java.util",
        "java.util.concurrent",
        "java.net",
        "java.nio",
        "java.io",
        "sun.nio.ch",
        "sun.security.action",
    )
)
