/*
 * Licensed under the Apache License, Version 2.0 — part of metaproxy's development stack.
 */
package io.metaproxy.devstack;

import java.util.Collections;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hive.metastore.RawStore;
import org.apache.hadoop.hive.metastore.TransactionalMetaStoreEventListener;
import org.apache.hadoop.hive.metastore.api.MetaException;
import org.apache.hadoop.hive.metastore.api.NotificationEvent;
import org.apache.hadoop.hive.metastore.events.AddPartitionEvent;
import org.apache.hadoop.hive.metastore.events.AlterDatabaseEvent;
import org.apache.hadoop.hive.metastore.events.AlterPartitionEvent;
import org.apache.hadoop.hive.metastore.events.AlterTableEvent;
import org.apache.hadoop.hive.metastore.events.CreateDatabaseEvent;
import org.apache.hadoop.hive.metastore.events.CreateTableEvent;
import org.apache.hadoop.hive.metastore.events.DropDatabaseEvent;
import org.apache.hadoop.hive.metastore.events.DropPartitionEvent;
import org.apache.hadoop.hive.metastore.events.DropTableEvent;
import org.apache.hadoop.hive.metastore.events.InsertEvent;
import org.apache.hadoop.hive.metastore.events.ListenerEvent;
import org.apache.hadoop.hive.metastore.messaging.EventMessage;
import org.apache.hadoop.hive.metastore.messaging.MessageBuilder;
import org.apache.hadoop.hive.metastore.messaging.MessageEncoder;
import org.apache.hadoop.hive.metastore.messaging.json.JSONMessageEncoder;

/**
 * Writes the Hive 4.0 metastore's notification log for metaproxy's development stack: one
 * event per change to databases, tables and partitions, in the transaction that makes the
 * change (a transactional listener), its message in the JSON format Hive's own writer uses.
 *
 * <p>Hive's own writer for 4.0 (DbNotificationListener, in hive-hcatalog-server-extensions) is
 * not published on Maven Central for 4.0.x; the stack's 2.3 and 3.1 metastores use theirs.
 */
public class NotificationLogWriter extends TransactionalMetaStoreEventListener {
  private final MessageBuilder messages = MessageBuilder.getInstance();
  private final MessageEncoder encoder = JSONMessageEncoder.getInstance();

  public NotificationLogWriter(Configuration conf) {
    super(conf);
  }

  private void write(ListenerEvent change, EventMessage message, String catalog, String db, String table)
      throws MetaException {
    if (!change.getStatus()) {
      return; // the change failed: nothing happened
    }
    NotificationEvent event =
        new NotificationEvent(
            0L, // the store gives it the next id of the log
            (int) (System.currentTimeMillis() / 1000),
            message.getEventType().toString(),
            encoder.getSerializer().serialize(message));
    event.setMessageFormat(encoder.getMessageFormat());
    event.setCatName(catalog);
    event.setDbName(db);
    event.setTableName(table);
    RawStore store = change.getIHMSHandler().getMS();
    store.addNotificationEvent(event);
  }

  @Override
  public void onCreateDatabase(CreateDatabaseEvent e) throws MetaException {
    write(e, messages.buildCreateDatabaseMessage(e.getDatabase()), e.getDatabase().getCatalogName(),
        e.getDatabase().getName(), null);
  }

  @Override
  public void onAlterDatabase(AlterDatabaseEvent e) throws MetaException {
    write(e, messages.buildAlterDatabaseMessage(e.getOldDatabase(), e.getNewDatabase()),
        e.getNewDatabase().getCatalogName(), e.getNewDatabase().getName(), null);
  }

  @Override
  public void onDropDatabase(DropDatabaseEvent e) throws MetaException {
    write(e, messages.buildDropDatabaseMessage(e.getDatabase()), e.getDatabase().getCatalogName(),
        e.getDatabase().getName(), null);
  }

  @Override
  public void onCreateTable(CreateTableEvent e) throws MetaException {
    write(e, messages.buildCreateTableMessage(e.getTable(), Collections.emptyIterator()),
        e.getTable().getCatName(), e.getTable().getDbName(), e.getTable().getTableName());
  }

  @Override
  public void onAlterTable(AlterTableEvent e) throws MetaException {
    write(e, messages.buildAlterTableMessage(e.getOldTable(), e.getNewTable(), e.getIsTruncateOp(),
        e.getWriteId()), e.getOldTable().getCatName(), e.getOldTable().getDbName(), e.getOldTable().getTableName());
  }

  @Override
  public void onDropTable(DropTableEvent e) throws MetaException {
    write(e, messages.buildDropTableMessage(e.getTable()), e.getTable().getCatName(),
        e.getTable().getDbName(), e.getTable().getTableName());
  }

  @Override
  public void onAddPartition(AddPartitionEvent e) throws MetaException {
    write(e, messages.buildAddPartitionMessage(e.getTable(), e.getPartitionIterator(),
        Collections.emptyIterator()), e.getTable().getCatName(), e.getTable().getDbName(), e.getTable().getTableName());
  }

  @Override
  public void onAlterPartition(AlterPartitionEvent e) throws MetaException {
    write(e, messages.buildAlterPartitionMessage(e.getTable(), e.getOldPartition(), e.getNewPartition(),
        e.getIsTruncateOp(), e.getWriteId()), e.getTable().getCatName(), e.getTable().getDbName(),
        e.getTable().getTableName());
  }

  @Override
  public void onDropPartition(DropPartitionEvent e) throws MetaException {
    write(e, messages.buildDropPartitionMessage(e.getTable(), e.getPartitionIterator()),
        e.getTable().getCatName(), e.getTable().getDbName(), e.getTable().getTableName());
  }

  @Override
  public void onInsert(InsertEvent e) throws MetaException {
    write(e, messages.buildInsertMessage(e.getTableObj(), e.getPartitionObj(), e.isReplace(),
        e.getFiles() == null ? Collections.emptyIterator() : e.getFiles().iterator()),
        e.getTableObj().getCatName(), e.getTableObj().getDbName(), e.getTableObj().getTableName());
  }
}
