package org.pfrgateway.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.MemoryBinaryStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.searchparam.submit.config.SearchParamSubmitterConfig;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import jakarta.persistence.EntityManagerFactory;
import java.util.Properties;
import javax.sql.DataSource;
import org.apache.commons.dbcp2.BasicDataSource;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * The Spring wiring of a HAPI FHIR JPA R4 server: HAPI's own configuration
 * classes, plus the beans a deployment must provide (data source, entity
 * manager, transactions, storage and partition settings). In-memory H2 and
 * no full-text search: a test server that starts fast and forgets. With
 * HAPI_JDBC_URL (and HAPI_JDBC_USER, HAPI_JDBC_PASSWORD) set to a
 * PostgreSQL database it keeps its data there instead, as a production
 * HAPI does and as several gateway nodes share it (the cluster test).
 */
@Configuration
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	SubscriptionSubmitterConfig.class,
	SubscriptionChannelConfig.class,
	SearchParamSubmitterConfig.class,
	ThreadPoolFactoryConfig.class
})
public class HapiTestConfig {

	/** The PostgreSQL database named by HAPI_JDBC_URL, or null for H2. */
	static String jdbcUrl() {
		String url = System.getenv("HAPI_JDBC_URL");
		if (url == null || url.isEmpty()) {
			return null;
		}
		if (!url.startsWith("jdbc:postgresql:")) {
			throw new IllegalArgumentException("HAPI_JDBC_URL must be a jdbc:postgresql: URL, not " + url);
		}
		return url;
	}

	/** In-memory H2, kept while the process runs; PostgreSQL with HAPI_JDBC_URL. */
	@Bean(destroyMethod = "close")
	public DataSource dataSource() {
		BasicDataSource ds = new BasicDataSource();
		String url = jdbcUrl();
		if (url != null) {
			ds.setDriver(new org.postgresql.Driver());
			ds.setUrl(url);
			ds.setUsername(System.getenv().getOrDefault("HAPI_JDBC_USER", ""));
			ds.setPassword(System.getenv().getOrDefault("HAPI_JDBC_PASSWORD", ""));
		} else {
			ds.setDriver(new org.h2.Driver());
			ds.setUrl("jdbc:h2:mem:hapi;DB_CLOSE_DELAY=-1");
			ds.setUsername("sa");
			ds.setPassword("");
		}
		ds.setMaxTotal(10);
		return ds;
	}

	/** Hibernate on H2 (or PostgreSQL), the schema made at startup; Hibernate Search off. */
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory, FhirContext fhirContext, DataSource dataSource,
			JpaStorageSettings storageSettings) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Properties props = new Properties();
		props.put("hibernate.dialect",
				(jdbcUrl() != null ? HapiFhirPostgresDialect.class : HapiFhirH2Dialect.class).getName());
		props.put("hibernate.hbm2ddl.auto", "update");
		props.put("hibernate.search.enabled", "false");
		props.put("hibernate.format_sql", "false");
		props.put("hibernate.show_sql", "false");
		emf.setJpaProperties(props);
		return emf;
	}

	/** JPA transactions, the one HAPI's services use. */
	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}

	/**
	 * HAPI's default storage settings, as a stock server has them (among
	 * them: a search's results are reused for a minute by the same search).
	 */
	@Bean
	public JpaStorageSettings storageSettings() {
		return new JpaStorageSettings();
	}

	/** Partitioning on: every request names its partition (header or URL). */
	@Bean
	public PartitionSettings partitionSettings() {
		PartitionSettings p = new PartitionSettings();
		p.setPartitioningEnabled(true);
		return p;
	}

	/** HAPI's subscription beans need their settings even with no subscriptions. */
	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	/** Binary content in memory, like everything else here. */
	@Bean
	public IBinaryStorageSvc binaryStorage() {
		return new MemoryBinaryStorageSvcImpl();
	}
}
